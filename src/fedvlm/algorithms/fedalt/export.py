"""A client's personalized model as a directory a user loads and runs.

``adapters/personalized/<client>/`` is a standard PEFT adapter (what stock
``PeftModel.from_pretrained(base, dir)`` loads: the client's own arrays). For FedALT it
also holds ``fedalt/rest_of_world.safetensors`` (the last rest-of-world LoRA the client
received, adapter-state keys) and, with a learned mixer, ``fedalt/mixer.safetensors``
(``<layer>.fedalt_gate.weight``, a ``2 x d_in`` matrix per layer): the own LoRA alone is
not the client's model, so `load_personalized` installs the mixing on top:

    model = PeftModel.from_pretrained(base, dir)
    load_personalized(model, dir)   # now model is the client's FedALT model
"""

from pathlib import Path

from safetensors.numpy import load_file, save_file

from fedvlm.core.types import AdapterState
from fedvlm.models.adapter import save_adapter
from fedvlm.algorithms.fedalt.layers import GATE, MixedLoRA

ROW_PREFIX = "rest_of_world."  # keys of a client's reply that are its rest of world
FEDALT_DIR, ROW_FILE, MIXER_FILE = "fedalt", "rest_of_world.safetensors", "mixer.safetensors"


def save_personalized(model, arrays: AdapterState, out_dir: Path) -> None:
    """Write a client's reply ``arrays`` (its own adapter, and for FedALT its rest of world
    under `ROW_PREFIX` and its mixer) as described in the module doc."""
    row = {k[len(ROW_PREFIX):]: v for k, v in arrays.items() if k.startswith(ROW_PREFIX)}
    mixer = {k: v for k, v in arrays.items() if k.endswith(f".{GATE}.weight")}
    own = {k: v for k, v in arrays.items() if not k.startswith(ROW_PREFIX) and k not in mixer}
    save_adapter(model, own, out_dir)
    if row:
        (out_dir / FEDALT_DIR).mkdir(exist_ok=True)
        save_file(row, str(out_dir / FEDALT_DIR / ROW_FILE))
        if mixer:
            save_file(mixer, str(out_dir / FEDALT_DIR / MIXER_FILE))


def load_personalized(model, directory) -> MixedLoRA | None:
    """Install the FedALT mixing saved in ``directory`` on ``model`` (a PeftModel with the
    directory's adapter loaded as ``default``); None where the directory has none."""
    folder = Path(directory) / FEDALT_DIR
    if not (folder / ROW_FILE).is_file():
        return None
    mixer = load_file(str(folder / MIXER_FILE)) if (folder / MIXER_FILE).is_file() else None
    return MixedLoRA(model, load_file(str(folder / ROW_FILE)), mixer, fixed=mixer is None)
