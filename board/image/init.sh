#!/bin/busybox sh
# The image's initramfs /init (board/image): loads the drivers the root needs, mounts the slot
# U-Boot chose (posfw.root=root-a|root-b on the command line: a GPT partition name) read-only and
# hands over to systemd. A slot that cannot be mounted reboots, which spends one of its attempts.
/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
for module in $(cat /lib/modules/order); do
    insmod /lib/modules/$module.ko 2>/dev/null
done
label=$(sed -n 's/.*posfw\.root=\([^ ]*\).*/\1/p' /proc/cmdline)
device=""
tries=0
while [ -z "$device" ] && [ $tries -lt 100 ]; do
    for uevent in /sys/class/block/*/uevent; do
        if grep -qx "PARTNAME=$label" "$uevent"; then
            device=/dev/$(sed -n 's/^DEVNAME=//p' "$uevent")
        fi
    done
    [ -n "$device" ] || { sleep 0.1; tries=$((tries + 1)); }
done
if [ -z "$device" ] || ! mount -t squashfs -o ro "$device" /newroot; then
    echo "posfw-init: cannot mount the root slot '$label' ($device); rebooting"
    sleep 5
    reboot -f
fi
echo "posfw-init: root $label on $device"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
