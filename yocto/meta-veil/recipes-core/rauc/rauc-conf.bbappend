# RAUC's system.conf and keyring for Veil images: the same template scripts/image fills in.
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI += "file://system.conf.in file://veil-rauc-dbus.conf"
VEIL_BOARD ?= "${MACHINE}"
# The CA update bundles are signed under; set it to the vendor's in local.conf or the kas file.
RAUC_KEYRING_FILE ?= "veil-dev-ca.pem"

do_install:prepend() {
    sed "s/@BOARD@/${VEIL_BOARD}/" ${UNPACKDIR}/system.conf.in > ${UNPACKDIR}/system.conf
}

do_install:append() {
    install -d ${D}${sysconfdir}/dbus-1/system.d
    install -m 0644 ${UNPACKDIR}/veil-rauc-dbus.conf ${D}${sysconfdir}/dbus-1/system.d/veil-rauc.conf
}
FILES:${PN} += "${sysconfdir}/dbus-1/system.d/veil-rauc.conf"
