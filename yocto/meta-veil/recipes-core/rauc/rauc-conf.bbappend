# RAUC's system.conf and keyring for Veil images: the same template scripts/image fills in.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI += "file://system.conf.in"
VEIL_BOARD ?= "${MACHINE}"
# The CA update bundles are signed under; set it to the vendor's in local.conf or the kas file.
RAUC_KEYRING_FILE ?= "veil-dev-ca.pem"

do_install:prepend() {
    sed "s/@BOARD@/${VEIL_BOARD}/" ${UNPACKDIR}/system.conf.in > ${UNPACKDIR}/system.conf
}
