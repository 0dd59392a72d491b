# The image's A/B boot (board/image, docs/image.md): U-Boot's distro boot finds this script on
# partition 1 (boot) and runs it. RAUC's U-Boot boot-count logic: BOOT_ORDER lists the slots in
# the order to try; each has BOOT_x_LEFT attempts; every boot spends one of the slot it picks, and
# only the firmware's health check on that slot (rauc status mark-good) gives them back. A slot
# with none left is passed over, so a new slot that never proves itself falls back to the old one.
# The state lives in uboot.env on this partition (fw_setenv/fw_printenv in Linux read the same
# file: /etc/fw_env.config).
# The state's buffer: U-Boot's free slot between the script (scriptaddr) and the kernel.
setenv envaddr ${pxefile_addr_r}
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
if load virtio 0:1 ${envaddr} uboot.env; then
    env import -c ${envaddr} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv slot
for s in ${BOOT_ORDER}; do
    if test "x${slot}" = "x"; then
        if test "x${s}" = "xA" && test ${BOOT_A_LEFT} -gt 0; then
            setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
            setenv slot A; setenv kernelpart 2; setenv rootlabel root-a
        elif test "x${s}" = "xB" && test ${BOOT_B_LEFT} -gt 0; then
            setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
            setenv slot B; setenv kernelpart 3; setenv rootlabel root-b
        fi
    fi
done

if test "x${slot}" = "x"; then
    # Every slot spent its attempts (e.g. power lost at each boot): start over rather than brick.
    echo "posfw-boot: no slot has boot attempts left; giving each 3 again"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
    env export -c -s 0x4000 ${envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fatwrite virtio 0:1 ${envaddr} uboot.env 0x4000
    reset
fi

echo "posfw-boot: slot ${slot} (order ${BOOT_ORDER}, attempts left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT})"
env export -c -s 0x4000 ${envaddr} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fatwrite virtio 0:1 ${envaddr} uboot.env 0x4000

load virtio 0:${kernelpart} ${kernel_addr_r} Image
load virtio 0:${kernelpart} ${ramdisk_addr_r} initrd.img
setenv bootargs "console=ttyAMA0 posfw.root=${rootlabel} rauc.slot=${slot} panic=10 quiet loglevel=4"
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
echo "posfw-boot: slot ${slot} did not boot; resetting"
reset
