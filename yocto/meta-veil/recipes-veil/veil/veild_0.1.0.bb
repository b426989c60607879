SUMMARY = "Veil privacy-first video gateway daemon"
DESCRIPTION = "veild: captures cameras, anonymizes every frame on the device, records, and relays \
               anonymized live video and signed evidence exports to the fleet."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "CLOSED"

# openh264's assembly and the V4L2 bindings.
DEPENDS += "clang-native nasm-native"

PV = "0.1.0+git"

# The source tree: the commit scripts/image builds from. The web page (web-ui/dist) is built
# before (release builds run `npm run build`) and comes in the release archive, because veild
# embeds it at compile time. Vendors point SRC_URI's first entry and SRCREV at a release.
SRC_URI = "git://git.veil.invalid/veil.git;protocol=https;branch=main \
           file://veild.service \
           file://veil-slot-check.service \
           file://veil-reboot.path \
           file://veil-reboot.service \
           file://veil.sysusers \
           file://veil.tmpfiles \
           file://veil-modules.conf \
          "
SRCREV ?= "0000000000000000000000000000000000000000"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd useradd

# Every crate of Cargo.lock, checksummed (scripts/yocto-crates writes it; scripts/test checks it).
require veild-crates.inc

CARGO_SRC_DIR = "firmware/veild"
CARGO_BUILD_FLAGS += "--locked"

SYSTEMD_SERVICE:${PN} = "veild.service veil-slot-check.service veil-reboot.path"
SYSTEMD_AUTO_ENABLE = "enable"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/veil --shell /sbin/nologin --groups video,render --user-group veil"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${UNPACKDIR}/veild.service ${UNPACKDIR}/veil-slot-check.service \
        ${UNPACKDIR}/veil-reboot.path ${UNPACKDIR}/veil-reboot.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${UNPACKDIR}/veil.sysusers ${D}${nonarch_libdir}/sysusers.d/veil.conf
    install -m 0644 ${UNPACKDIR}/veil.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/veil.conf
    install -d ${D}${nonarch_libdir}/modules-load.d
    install -m 0644 ${UNPACKDIR}/veil-modules.conf ${D}${nonarch_libdir}/modules-load.d/veil.conf
}

FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d ${nonarch_libdir}/modules-load.d"
RDEPENDS:${PN} += "rauc veil-models"
