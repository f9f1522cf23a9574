"""benchmarks/twins_dp.py: the weight mapping's key coverage and the report writer (always), and the Diffusion Policy
twin end to end when a checkout of the public code is given (``PUBLIC_DP=/path/to/checkout`` and diffusers installed
from benchmarks/requirements-twins-dp.txt; neither is ever downloaded here, so without them that test skips)."""
import importlib.util
import json
import os
import subprocess
import types

import pyarrow.parquet as pq
import pytest
import torch

from algorithms import EnvSpec
from algorithms.diffusion_policy import DiffusionPolicy, DiffusionPolicyConfig
from benchmarks import twins_dp

SPEC = EnvSpec(obs_dim=20, act_dim=2)


def _wb(prefix):
    return [f"{prefix}.weight", f"{prefix}.bias"]


def public_unet_keys(input_dim, down_dims):
    """The public ConditionalUnet1D's state_dict keys, spelled out from its source (conditional_unet1d.py,
    conv1d_components.py): FiLM residual blocks, Downsample1d/Upsample1d wrapping their conv as ``.conv``."""
    def res(prefix, c_in, c_out):
        keys = []
        for b in (0, 1):
            keys += _wb(f"{prefix}.blocks.{b}.block.0") + _wb(f"{prefix}.blocks.{b}.block.1")
        keys += _wb(f"{prefix}.cond_encoder.1")
        return keys + (_wb(f"{prefix}.residual_conv") if c_in != c_out else [])

    dims = [input_dim, *down_dims]
    in_out = list(zip(dims[:-1], dims[1:]))
    keys = _wb("diffusion_step_encoder.1") + _wb("diffusion_step_encoder.3")
    for i, (a, b) in enumerate(in_out):
        keys += res(f"down_modules.{i}.0", a, b) + res(f"down_modules.{i}.1", b, b)
        if i < len(in_out) - 1:
            keys += _wb(f"down_modules.{i}.2.conv")
    keys += res("mid_modules.0", dims[-1], dims[-1]) + res("mid_modules.1", dims[-1], dims[-1])
    for j, (a, b) in enumerate(reversed(in_out[1:])):
        keys += res(f"up_modules.{j}.0", 2 * b, a) + res(f"up_modules.{j}.1", a, a) + _wb(f"up_modules.{j}.2.conv")
    return keys + _wb("final_conv.0.block.0") + _wb("final_conv.0.block.1") + _wb("final_conv.1")


def public_transformer_keys(n_layer):
    """The public TransformerForDiffusion's keys (obs as cond, MLP cond encoder, causal masks registered as buffers,
    ModuleAttrMixin's ``_dummy_variable``), spelled out from transformer_for_diffusion.py."""
    keys = ["_dummy_variable", "pos_emb", "cond_pos_emb", "mask", "memory_mask"]
    keys += _wb("input_emb") + _wb("cond_obs_emb") + _wb("encoder.0") + _wb("encoder.2")
    for i in range(n_layer):
        p = f"decoder.layers.{i}"
        for att in ("self_attn", "multihead_attn"):
            keys += [f"{p}.{att}.in_proj_weight", f"{p}.{att}.in_proj_bias"] + _wb(f"{p}.{att}.out_proj")
        for m in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            keys += _wb(f"{p}.{m}")
    return keys + _wb("ln_f") + _wb("head")


@pytest.mark.parametrize("backbone", ["cnn", "transformer"])
def test_weight_mapping_covers_the_platform_network(backbone):
    """A public-shaped state dict (its keys as the public code names them) maps onto every key of the platform's
    network and nothing else, and loads strictly with the values where they belong."""
    if backbone == "cnn":
        cfg = DiffusionPolicyConfig(backbone="cnn", down_dims=(16, 32, 64), diffusion_step_embed_dim=16)
        public_keys = public_unet_keys(2, cfg.down_dims)
    else:
        cfg = DiffusionPolicyConfig(backbone="transformer", n_layer=2, n_emb=16, n_head=2)
        public_keys = public_transformer_keys(cfg.n_layer)
    algo = DiffusionPolicy(cfg, SPEC)
    ours = algo.model.state_dict()
    assert twins_dp.mapping_gaps(backbone, public_keys, ours) == ([], [])
    g = torch.Generator().manual_seed(0)
    public = {}
    for k in public_keys:
        mapped = twins_dp.map_public_key(backbone, k)
        public[k] = torch.randn(ours[mapped].shape, generator=g) if mapped else torch.zeros(0)
    algo.model.load_state_dict(twins_dp.map_public_state(backbone, public), strict=True)
    loaded = algo.model.state_dict()
    if backbone == "cnn":
        assert torch.equal(loaded["down_modules.0.2.weight"], public["down_modules.0.2.conv.weight"])
        assert torch.equal(loaded["up_modules.0.2.bias"], public["up_modules.0.2.conv.bias"])
    else:
        assert "mask" not in twins_dp.map_public_state(backbone, public)
        assert torch.equal(loaded["decoder.layers.1.multihead_attn.in_proj_weight"],
                           public["decoder.layers.1.multihead_attn.in_proj_weight"])
    # a key the public network would not have, or one it lacks, shows up
    drop = next(k for k in public_keys if twins_dp.map_public_key(backbone, k) is not None)
    missing, extra = twins_dp.mapping_gaps(backbone, [k for k in public_keys if k != drop] + ["bogus.weight"], ours)
    assert missing == [twins_dp.map_public_key(backbone, drop)] and extra == ["bogus.weight"]
    with pytest.raises(ValueError):
        twins_dp.map_public_key("unet", "x")


def test_writer_markdown_and_parquet(tmp_path):
    rows = [twins_dp.row("cnn", "(a) denoiser output", 3e-7, 2.0, 1e-5, rel=True),
            twins_dp.row("cnn", "(c) weights", 5e-3, 1.0, 1e-5, rel=True, note="broken on purpose"),
            twins_dp.row("transformer", "(d) DDIM as configured", 1.2, kind="deviation", note="documented")]
    assert rows[0]["tolerance"] == pytest.approx(2e-5) and rows[0]["passed"] is True
    assert rows[1]["passed"] is False and rows[2]["passed"] is None and rows[2]["tolerance"] is None
    meta = {"public_repo": twins_dp.PUBLIC_REPO, "public_commit": "abc1234", "platform_commit": "def5678",
            "platform_uncommitted": [], "torch": "2", "diffusers": "0.11.1", "einops": "0.4.1", "python": "3.11",
            "threads": 1, "cpus": 2, "load_1m_start": 1.0, "wall_s": 3.0, "batch_size": 16, "sample_batch": 2,
            "step": 1200, "command": "python -m benchmarks.twins_dp --public-dp PATH"}
    md_path = twins_dp.write(rows, meta, str(tmp_path))[1]
    table = pq.read_table(tmp_path / "twins_dp.parquet")
    df = table.to_pandas()
    assert list(df["check"]) == [r["check"] for r in rows]
    assert list(df["passed"][:2]) == [True, False] and df["passed"].isna()[2]
    assert set(df["public_commit"]) == {"abc1234"}
    assert json.loads(table.schema.metadata[b"twins_dp"])["diffusers"] == "0.11.1"
    md = open(md_path).read()
    assert "`abc1234`" in md and "| cnn | (c) weights | 5.00e-03 | 1 | 1.0e-05 | **no** |" in md
    assert "| transformer | (d) DDIM as configured | 1.20e+00 | 1 | measured | deviation |" in md
    assert "1 of 2 checks pass; 1 rows measure documented deviations" in md


def test_dp_twin_skips_with_one_line(tmp_path, capsys):
    args = types.SimpleNamespace(public_dp=str(tmp_path / "nowhere"), out=str(tmp_path), threads=1)
    assert twins_dp.dp_twin(args) == {}
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "skipped" in lines[0]
    assert not os.listdir(tmp_path)


PUBLIC_DP = os.environ.get("PUBLIC_DP", "")
HAVE_PUBLIC = (os.path.isfile(os.path.join(PUBLIC_DP, "diffusion_policy", "policy", "diffusion_unet_lowdim_policy.py"))
               and importlib.util.find_spec("diffusers") is not None)


@pytest.mark.skipif(not HAVE_PUBLIC, reason="needs PUBLIC_DP set to a checkout of github.com/real-stanford/"
                    "diffusion_policy and diffusers installed (pip install -r benchmarks/requirements-twins-dp.txt); "
                    "neither is downloaded by the tests")
def test_dp_twin_end_to_end(tmp_path):
    """Both backbones, batch 16, 2 sampled observations: every check within its tolerance (DDIM on the default timesteps,
    diffusers'), the 'linspace' option's deviation real, the report files with the public commit."""
    res = twins_dp.main(["--public-dp", PUBLIC_DP, "--out", str(tmp_path), "--batch-size", "16",
                         "--sample-batch", "2"])
    rows = res["rows"]
    checks = [r for r in rows if r["kind"] == "check"]
    assert len(checks) == 2 * 19 + 1  # 19 per backbone, and the transformer's attention masks
    for r in checks:
        assert r["max_abs_diff"] <= r["tolerance"], (r["backbone"], r["check"], r["max_abs_diff"], r["tolerance"])
    assert [r["max_abs_diff"] for r in checks if r["check"] == "weights after the mapping"] == [0.0, 0.0]
    for backbone in ("cnn", "transformer"):
        dev = [r for r in rows if r["backbone"] == backbone and r["kind"] == "deviation"]
        assert len(dev) == 1 and dev[0]["max_abs_diff"] > 1e-2
        ts = res["facts"][backbone]["ddim_timesteps"]
        assert ts["platform leading"] == ts["public (diffusers DDIMScheduler)"] and ts["platform linspace"][0] == 99
    commit = subprocess.run(["git", "-C", PUBLIC_DP, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    df = pq.read_table(tmp_path / "twins_dp.parquet").to_pandas()
    assert len(df) == len(rows) and set(df["public_commit"]) == {commit}
    assert f"`{commit}`" in open(tmp_path / "twins_dp.md").read()
