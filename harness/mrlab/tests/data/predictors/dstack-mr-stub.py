#!/usr/bin/env python3
"""Stands in for `dstack-mr` in the tests: records what the adapter gave it (argv, the image
folder's metadata.json and where its files point, whether dstack-acpi-tables is on PATH) into
./record.json, and prints registers in the shape of `dstack-mr measure --json`."""
import json
import os
import shutil
import sys

argv = sys.argv[1:]
metadata_path = argv[-1]
metadata = json.load(open(metadata_path))
image = os.path.dirname(metadata_path)
files = {key: os.path.realpath(os.path.join(image, metadata[key])) for key in ("bios", "kernel", "initrd")}
json.dump(
    {
        "argv": argv,
        "metadata": metadata,
        "files": files,
        "acpi_tables_tool": shutil.which("dstack-acpi-tables"),
    },
    open("record.json", "w"),
)
print(json.dumps({"mrtd": "11" * 48, "rtmr0": "22" * 48, "rtmr1": "33" * 48, "rtmr2": "44" * 48}, indent=2))
