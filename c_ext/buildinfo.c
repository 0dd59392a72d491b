/* buildinfo.c: the build record of _posio (compiler, flags, build time) that
 * diagnostics shows; build_posio.py passes the values in as -D macros, and a
 * build by other means says "unknown" rather than failing. */
#include "posio.h"

#ifndef POSIO_BUILD_CC
#define POSIO_BUILD_CC "unknown"
#endif
#ifndef POSIO_BUILD_FLAGS
#define POSIO_BUILD_FLAGS "unknown"
#endif
#ifndef POSIO_BUILD_TIME
#define POSIO_BUILD_TIME "unknown"
#endif

const char *posio_build_compiler(void)
{
#ifdef __VERSION__
    /* The command name alone does not say which gcc/clang release built us. */
    return POSIO_BUILD_CC " (" __VERSION__ ")";
#else
    return POSIO_BUILD_CC;
#endif
}

const char *posio_build_flags(void)
{
    return POSIO_BUILD_FLAGS;
}

const char *posio_build_time(void)
{
    return POSIO_BUILD_TIME;
}
