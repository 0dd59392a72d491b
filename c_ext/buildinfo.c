/* buildinfo.c: the build record of _posio (compiler, flags, build time,
 * hardening in effect) that diagnostics shows; build_posio.py passes the
 * first three in as -D macros, and a build by other means says "unknown"
 * rather than failing. */
#include <string.h> /* any C library header: it sets the fortify level */

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

#define POSIO_STR_(x) #x
#define POSIO_STR(x) POSIO_STR_(x)

/* What the compiler actually applied, not what was asked for: glibc sets
 * __USE_FORTIFY_LEVEL only when _FORTIFY_SOURCE is defined AND optimising
 * (a later -O0 or -U_FORTIFY_SOURCE would show here as "no fortify"); the
 * compiler predefines __SSP_*__ for the -fstack-protector variant in force. */
#if defined(__USE_FORTIFY_LEVEL) && __USE_FORTIFY_LEVEL > 0
#define POSIO_FORTIFY "fortify-" POSIO_STR(__USE_FORTIFY_LEVEL)
#else
#define POSIO_FORTIFY "no fortify"
#endif
#if defined(__SSP_ALL__)
#define POSIO_SSP "stack-protector-all"
#elif defined(__SSP_STRONG__)
#define POSIO_SSP "stack-protector-strong"
#elif defined(__SSP__)
#define POSIO_SSP "stack-protector"
#else
#define POSIO_SSP "no stack-protector"
#endif

const char *posio_build_hardening(void)
{
    return POSIO_SSP " " POSIO_FORTIFY;
}
