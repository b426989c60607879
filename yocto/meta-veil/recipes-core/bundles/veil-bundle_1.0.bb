# nooelint: oelint.var.mandatoryvar.SRC_URI - a bundle is made of an image, it fetches nothing
SUMMARY = "Signed RAUC update bundle of the Veil image"
DESCRIPTION = "The counterpart of scripts/bundle: the root slot of veil-image in a verity bundle \
               signed with the vendor's key, for this machine only."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "CLOSED"

inherit bundle

VEIL_BOARD ?= "${MACHINE}"
RAUC_BUNDLE_COMPATIBLE = "veil-${VEIL_BOARD}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "Veil firmware ${DISTRO_VERSION} for ${VEIL_BOARD}"
RAUC_BUNDLE_FORMAT = "verity"
RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "veil-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
# The vendor's signing pair, under the CA the image's keyring holds (set in local.conf or kas).
RAUC_KEY_FILE ?= "${TOPDIR}/keys/signing.key"
RAUC_CERT_FILE ?= "${TOPDIR}/keys/signing.pem"
