import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from bebert_cli.atomic import atomic_output_dir


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_published_files_get_the_umask_mode_even_from_safetensors(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors >= 0.8: created 0o600
            (tmp / "sub").mkdir()
            (tmp / "sub" / "config.json").write_text("{}")
            os.chmod(tmp / "sub" / "config.json", 0o600)
    finally:
        os.umask(old)
    for f in ("model.safetensors", "sub/config.json"):
        assert stat.S_IMODE((tmp_path / "out" / f).stat().st_mode) == 0o644, f
