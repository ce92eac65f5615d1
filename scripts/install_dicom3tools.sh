#!/usr/bin/env bash
# Install Debian's dicom3tools for the DICOM output tests (tests/integration/
# test_dicom_outputs.py): its dciodvfy checks the Segmentation and Parametric Map predict writes
# against the DICOM standard, independently of highdicom, which wrote them. Does nothing where
# dciodvfy is already there; where it cannot be installed (not root, no apt-get, no registry)
# it says so and exits 0, and those checks skip.
set -uo pipefail

if command -v dciodvfy >/dev/null; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_dicom3tools: not root or no apt-get: the dciodvfy checks will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q dicom3tools >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q dicom3tools >/dev/null 2>&1 ||
        echo "install_dicom3tools: apt-get could not install dicom3tools: the dciodvfy checks will skip" >&2
fi
exit 0
