"""VAEs chosen per request, as A1111's "SD VAE" quick setting: the `vae/` folder.

Entries: single `.safetensors` files (A1111/LDM key layout, or diffusers keys), named
by their file name as A1111 lists them (`sdxl_vae.safetensors`), and diffusers VAE
folders (a `config.json` and weights), named by the folder name. `Automatic` (or
no `vae`) is the model's own.

Family: SD 1.x/2.x, SDXL and Flux VAEs. Flux's has 16 latent channels, told from
the weights. SD and SDXL VAEs share one architecture and differ only in weights
and `scaling_factor`, so the family comes from (in order) a diffusers folder's
config (`scaling_factor` 0.13025 = SDXL), the file's `modelspec.architecture`
metadata, and the name: a name containing "xl" is an SDXL VAE, any other an SD
1.x/2.x one. A VAE of another family is refused, naming both.

A single file is loaded by `AutoencoderKL.from_single_file` with the config of the
model's own VAE, so a file built for another architecture fails with the shapes.
A loaded VAE lives in the device slot's ModelCache (key "vae:<path>"), under the
slot's byte budget, locked while a job uses it; the cached model is never changed:
a job gets a fresh pipeline object whose `vae` is the chosen one.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RequestError
from .hashes import file_sha256
from .loras import read_header

AUTOMATIC = "Automatic"
VAE_HASH_LEN = 10  # A1111: sha256(file)[:10]
SDXL_SCALING = 0.13025
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
LABELS = {"sd15": "SD 1.x/2.x", "sdxl": "SDXL", "flux": "Flux"}


@dataclass(frozen=True)
class VaeEntry:
    name: str  # as listed and written in the infotext's "VAE"
    path: Path  # the .safetensors file, or the diffusers folder
    family: str  # sd15 | sdxl | flux

    @property
    def key(self) -> str:
        return f"vae:{self.path}"

    @property
    def weights(self) -> Path:
        if self.path.is_file():
            return self.path
        return next((self.path / n for n in WEIGHT_FILES if (self.path / n).is_file()), self.path)

    @property
    def short_hash(self) -> str:
        """A1111's "VAE hash": the first 10 hex of the weights file's SHA-256."""
        return file_sha256(self.weights)[:VAE_HASH_LEN]

    def check_family(self, family: str, model: str, field: str = "vae") -> None:
        if family != self.family:
            rule = (f"'{self.name}' is a {LABELS.get(self.family, self.family)} VAE; model "
                    f"'{model}' is {LABELS.get(family, family)}")  # fmt: skip
            raise RequestError(field, rule)


def _family_by_name(name: str) -> str:
    return "sdxl" if re.search("xl", name, re.IGNORECASE) else "sd15"


def describe_file(path: Path) -> VaeEntry:
    """A single-file VAE, from its header; ValueError says what is wrong."""
    header = read_header(path)
    meta = header.get("__metadata__") or {}
    shapes = {k: v.get("shape") for k, v in header.items() if isinstance(v, dict)}
    encoder = [s for k, s in shapes.items() if k.endswith("conv_out.weight") and "decoder" not in k]
    conv_out = encoder[0] if encoder else None
    if conv_out is None:
        raise ValueError("no encoder.conv_out.weight: not a VAE")
    if conv_out[0] == 32:  # 2 x 16 latent channels
        return VaeEntry(path.name, path, "flux")
    arch = str(meta.get("modelspec.architecture", ""))
    family = "sdxl" if "xl" in arch.lower() else _family_by_name(path.stem)
    return VaeEntry(path.name, path, family)


def describe_folder(path: Path) -> VaeEntry:
    config = json.loads((path / "config.json").read_text())
    if config.get("_class_name") != "AutoencoderKL":
        raise ValueError(f"config.json is a {config.get('_class_name')}, not an AutoencoderKL")
    if config.get("latent_channels") == 16:
        family = "flux"
    elif abs(float(config.get("scaling_factor", 0.18215)) - SDXL_SCALING) < 1e-6:
        family = "sdxl"
    else:
        family = "sd15"
    return VaeEntry(path.name, path, family)


class VaeLibrary:
    """The VAE folder, rescanned on demand."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self._lock = threading.Lock()
        self._entries: dict[str, VaeEntry] = {}
        self.refused: dict[str, str] = {}
        self._scanned = False

    def rescan(self) -> None:
        entries: dict[str, VaeEntry] = {}
        refused: dict[str, str] = {}
        if self.folder and self.folder.is_dir():
            for child in sorted(self.folder.iterdir()):
                if child.name.startswith("."):
                    continue
                try:
                    if child.is_file() and child.suffix == ".safetensors":
                        entries[child.name] = describe_file(child)
                    elif child.is_dir() and (child / "config.json").is_file():
                        entries[child.name] = describe_folder(child)
                    elif child.suffix in (".pt", ".ckpt", ".bin", ".pth"):
                        why = "a pickle, which can run code when loaded; convert it:"
                        refused[child.name] = f"{why} python app.py convert {child}"
                except (OSError, ValueError, KeyError) as e:
                    refused[child.name] = str(e)
        with self._lock:
            self._entries, self.refused, self._scanned = entries, refused, True

    def names(self, family: str | None = None) -> list[str]:
        if not self._scanned:
            self.rescan()
        return sorted(n for n, e in self._entries.items() if family in (None, e.family))

    def get(self, name: str, field: str = "vae") -> VaeEntry:
        if not self._scanned or name not in self._entries:
            self.rescan()  # a file added since the last scan
        if name in self.refused:
            raise RequestError(field, f"'{name}' is not usable: {self.refused[name]}")
        if name not in self._entries:
            known = ", ".join([AUTOMATIC, *self.names()])
            raise RequestError(field, f"no VAE named '{name}' in the VAE folder; known: {known}")
        return self._entries[name]


def load_vae(entry: VaeEntry, model_vae: Any, device: Any, dtype: Any) -> Any:
    """The entry's AutoencoderKL on `device`, with the model's own VAE config for a
    single file. A file whose shapes do not fit the model's VAE is a RequestError."""
    from diffusers import AutoencoderKL

    try:
        if entry.path.is_dir():
            vae = AutoencoderKL.from_pretrained(str(entry.path), dtype=dtype)
        else:
            with tempfile.TemporaryDirectory() as config:
                model_vae.save_config(config)
                vae = AutoencoderKL.from_single_file(
                    str(entry.path), config=config, local_files_only=True, dtype=dtype
                )
    except (ValueError, RuntimeError, KeyError, OSError) as e:
        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise RequestError("vae", f"'{entry.name}' does not fit this model's VAE: {first}") from e
    return vae.to(device).eval()
