SUMMARY = "Veil gateway image: read-only A/B root slots, a data partition, RAUC"
DESCRIPTION = "The production counterpart of scripts/image: the same unit, user, layout and \
               RAUC configuration, built from Yocto sources for the board vendor's machine."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "CLOSED"

inherit core-image

IMAGE_INSTALL:append = " veild veil-models veil-base-files rauc openssh-sshd systemd-extra-utils kernel-modules"
IMAGE_FEATURES:append = " read-only-rootfs"
# No password for anyone: the setup wizard makes the first account, SSH takes keys only.
IMAGE_FEATURES:remove = "debug-tweaks allow-empty-password empty-root-password allow-root-login"

IMAGE_FSTYPES = "wic ext4"
WKS_FILE = "veil-ab.wks"
WKS_FILE_DEPENDS:append = " veil-grub"
IMAGE_BOOT_FILES:x86-64 = "BOOTX64.EFI;EFI/BOOT/BOOTX64.EFI grubenv;EFI/veil/grubenv"
IMAGE_BOOT_FILES:aarch64 = "BOOTAA64.EFI;EFI/BOOT/BOOTAA64.EFI grubenv;EFI/veil/grubenv"
do_image_wic[depends] += "veil-grub:do_deploy"

# fstab from veil-base-files: the data partition, the bind mounts onto it, tmpfs for /tmp.
ROOTFS_POSTPROCESS_COMMAND:append = " veil_fstab;"
veil_fstab() {
    mv ${IMAGE_ROOTFS}${sysconfdir}/fstab.veil ${IMAGE_ROOTFS}${sysconfdir}/fstab
}
