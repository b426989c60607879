SUMMARY = "GRUB EFI image with Veil's A/B slot selection built in"
DESCRIPTION = "grub-mkstandalone with the grub.cfg scripts/image also uses; RAUC's grub backend \
               writes the environment it reads."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "CLOSED"

DEPENDS = "grub-efi grub-native"

SRC_URI = "file://grub.cfg"
S = "${UNPACKDIR}"

inherit deploy

GRUB_TARGET:aarch64 = "arm64-efi"
GRUB_TARGET:x86-64 = "x86_64-efi"
EFI_NAME:aarch64 = "BOOTAA64.EFI"
EFI_NAME:x86-64 = "BOOTX64.EFI"

do_compile() {
    grub-mkstandalone -O ${GRUB_TARGET} -d ${STAGING_LIBDIR}/grub/${GRUB_TARGET} -o ${B}/${EFI_NAME} \
        --modules="part_gpt ext2 fat search search_label regexp loadenv test echo linux normal" \
        --locales= --fonts= --themes= "boot/grub/grub.cfg=${S}/grub.cfg"
    grub-editenv ${B}/grubenv create
    grub-editenv ${B}/grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
}

do_deploy() {
    install -m 0644 ${B}/${EFI_NAME} ${B}/grubenv ${DEPLOYDIR}/
}
addtask deploy after do_compile before do_build
