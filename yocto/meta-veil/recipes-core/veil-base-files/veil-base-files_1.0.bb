SUMMARY = "Veil image layout: read-only root slots, the data partition, SSH by key only"
DESCRIPTION = "fstab, the image configuration, sshd, journald and watchdog settings shared with \
               the Debian image built by scripts/image."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "CLOSED"

SRC_URI = "file://fstab \
           file://veil.toml.in \
           file://sshd-veil.conf \
           file://ssh-veil.conf \
           file://veil-ssh-keys.service \
           file://veil-machine-id.service \
           file://journald-veil.conf \
           file://watchdog-veil.conf \
           file://repart-esp.conf \
           file://repart-root-a.conf \
           file://repart-root-b.conf \
           file://repart-data.conf \
           "
S = "${UNPACKDIR}"

inherit systemd allarch

VEIL_BOARD ?= "${MACHINE}"
SYSTEMD_SERVICE:${PN} = "veil-ssh-keys.service veil-machine-id.service"

do_install() {
    install -d ${D}${sysconfdir}/veil ${D}${sysconfdir}/ssh/sshd_config.d
    install -m 0644 ${S}/fstab ${D}${sysconfdir}/fstab.veil
    sed "s/@BOARD@/${VEIL_BOARD}/" ${S}/veil.toml.in > ${D}${sysconfdir}/veil/veil.toml
    printf 'VERSION=%s\nBOARD=%s\n' "${DISTRO_VERSION}" "${VEIL_BOARD}" > ${D}${sysconfdir}/veil-release
    install -m 0644 ${S}/sshd-veil.conf ${D}${sysconfdir}/ssh/sshd_config.d/veil.conf
    install -d ${D}${systemd_system_unitdir}/sshd.socket.d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/ssh-veil.conf ${D}${systemd_system_unitdir}/sshd.socket.d/veil.conf
    install -m 0644 ${S}/veil-ssh-keys.service ${S}/veil-machine-id.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/systemd/journald.conf.d ${D}${nonarch_libdir}/systemd/system.conf.d
    install -m 0644 ${S}/journald-veil.conf ${D}${nonarch_libdir}/systemd/journald.conf.d/veil.conf
    install -m 0644 ${S}/watchdog-veil.conf ${D}${nonarch_libdir}/systemd/system.conf.d/veil.conf
    install -d ${D}/data ${D}/boot/efi ${D}${localstatedir}/lib/veil
    # The data partition grows to the medium at boot (systemd-repart).
    install -d ${D}${nonarch_libdir}/repart.d
    install -m 0644 ${S}/repart-esp.conf ${D}${nonarch_libdir}/repart.d/10-esp.conf
    install -m 0644 ${S}/repart-root-a.conf ${D}${nonarch_libdir}/repart.d/20-root-a.conf
    install -m 0644 ${S}/repart-root-b.conf ${D}${nonarch_libdir}/repart.d/30-root-b.conf
    install -m 0644 ${S}/repart-data.conf ${D}${nonarch_libdir}/repart.d/40-data.conf
}

FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/systemd ${nonarch_libdir}/repart.d /data /boot/efi ${localstatedir}/lib/veil"
RDEPENDS:${PN} += "grub-editenv util-linux-fsfreeze"
