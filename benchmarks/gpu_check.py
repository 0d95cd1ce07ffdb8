"""GPU check: does chessrl train on this CUDA machine, and how well does it use the GPU?

Meant for a few minutes on a GPU box (an H100), with no package registry: it installs
nothing. Four parts, each printed as it finishes (under ~3 minutes in all; ``--quick`` ~1):

1. Environment: Python, torch (and whether it was built with CUDA), the GPU (name, memory,
   compute capability, bf16), chessrl (importable? the chess game registered?), Stockfish.
   Whatever is missing is said plainly. Without Stockfish the training part falls back to
   ``[env] reward = "none"`` (and no teacher forcing, which also needs the engine) and says so.
   Without CUDA it stops there (unless ``--cpu``).
2. Training: ``--warmup`` + ``--steps`` GRPO steps of examples/clean_proposed.toml on
   ``device = "cuda"``
   with ``rollout.roots = 32`` (``--roots``) and one Stockfish process per spare core; the
   trainer's ``time/*`` breakdown (docs/metrics.md).
3. Learner throughput: forward+backward of the default policy (4 layers, d_model 256, 8 heads,
   d_ff 1024, the chess game's observation length, 1968 actions) under bf16 autocast at batch
   ``--batch`` (4096), in positions/s; forward-only (rollout sampling) too.
4. Efficiency: the policy's FLOPs per position counted analytically (matmuls of qkv, attention
   scores and values, projection, MLP, head; x3 for forward+backward) times positions/s gives
   the achieved TFLOP/s, compared with the TFLOP/s of a large bf16 matmul measured here
   (the practical dense bf16 peak of this GPU).

    python benchmarks/gpu_check.py            # on the GPU machine
    python benchmarks/gpu_check.py --quick    # fewer steps, shorter timings
    python benchmarks/gpu_check.py --cpu      # the same code paths on CPU, small sizes (a test)

Exit status 0 when every part ran, 1 otherwise. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLEAN = REPO / "examples" / "clean_proposed.toml"
# chess observation geometry (chessrl.envs.chess.encoding), used only if chessrl cannot be imported
CHESS_OBS_LEN, CHESS_OBS_VOCAB, CHESS_ACTIONS = 71, 44, 1968
DEFAULT_POLICY = dict(d_model=256, n_layers=4, n_heads=8, d_ff=1024, head_dim=16)


def say(line: str = "") -> None:
    print(line, flush=True)


# ------------------------------------------------------------------------------------------
# 1. environment
# ------------------------------------------------------------------------------------------


def check_environment(args: argparse.Namespace) -> dict:
    """What is here and what is missing; never installs anything."""
    env: dict = {
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "missing": [],
        "notes": [],
    }
    say("== 1. environment (this script installs nothing: no package registry is assumed)")
    say(f"python      {env['python']} ({sys.executable}); {env['cores']} CPU cores")
    try:
        import torch
    except ImportError as exc:
        env["torch"] = None
        env["missing"].append(
            f"torch is not importable ({exc}); install a CUDA build of torch 2.13"
        )
        say(f"torch       MISSING: {exc}")
        return env
    env["torch"] = torch.__version__
    env["torch_cuda_build"] = torch.version.cuda
    env["cuda"] = torch.cuda.is_available()
    say(
        f"torch       {torch.__version__} (CUDA build: "
        f"{torch.version.cuda or 'none, a CPU-only build'})"
    )
    if env["cuda"]:
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
            "count": torch.cuda.device_count(),
            "bf16": torch.cuda.is_bf16_supported(),
        }
        say(
            f"GPU         {p.name}, {env['gpu']['memory_gib']} GiB, compute capability "
            f"{p.major}.{p.minor}, "
            f"bf16 {'yes' if env['gpu']['bf16'] else 'NO'}; {env['gpu']['count']} device(s)"
        )
        if not env["gpu"]["bf16"]:
            env["missing"].append(
                "the GPU has no bf16 support: the bf16 autocast figures are not meaningful"
            )
    else:
        why = (
            "torch was built without CUDA"
            if not torch.version.cuda
            else "torch has CUDA but sees no device (driver? CUDA_VISIBLE_DEVICES?)"
        )
        (env["notes"] if args.cpu else env["missing"]).append(f"no CUDA: {why}")
        say(f"GPU         {'none (--cpu: running on CPU)' if args.cpu else 'MISSING'}: {why}")
    try:
        import chessrl
        from chessrl import pluginmanager

        games = sorted(pluginmanager.games())
        env["chessrl"] = getattr(chessrl, "__version__", "?")
        env["games"] = games
        say(
            f"chessrl     {env['chessrl']} from {Path(chessrl.__file__).parent}; games: "
            f"{', '.join(games) or 'none'}"
        )
        if "chess" not in games:
            env["missing"].append(
                "the chess game is not registered (is chessrl installed with its entry points? "
                "`pip install -e .` without network: `pip install --no-index "
                "--no-build-isolation -e .`)"
            )
    except Exception as exc:  # ImportError, or a broken dependency inside
        env["chessrl"] = None
        env["missing"].append(
            f"chessrl is not importable ({type(exc).__name__}: {exc}); the training part is "
            "skipped and the throughput part uses a built-in copy of the policy"
        )
        say(f"chessrl     MISSING: {type(exc).__name__}: {exc}")
    stockfish = shutil.which(args.stockfish) or shutil.which("stockfish")
    env["stockfish"] = stockfish
    if stockfish:
        say(f"stockfish   {stockfish}")
    else:
        env["notes"].append(
            f"Stockfish not found ({args.stockfish} or on PATH): training falls back to "
            f'[env] reward = "none" and rollout.teacher_forcing_prob = 0 (no engine at all)'
        )
        say(
            f"stockfish   MISSING at {args.stockfish} and on PATH -> the chess run uses "
            '[env] reward = "none" (only game results score) and no teacher forcing'
        )
    for line in env["missing"]:
        say(f"  missing: {line}")
    return env


# ------------------------------------------------------------------------------------------
# 2. training steps
# ------------------------------------------------------------------------------------------


def training_steps(args: argparse.Namespace, env: dict) -> dict:
    import torch

    from chessrl.config import load_config
    from chessrl.run import build_run
    from chessrl.step import grpo_step

    say(f"\n== 2. training: {args.warmup} warm-up + {args.steps} timed GRPO steps")
    engines = args.engines or max(2, min(16, (os.cpu_count() or 2) - 2))
    overrides = [
        f"device={'cpu' if args.cpu else 'cuda'}",
        f"rollout.roots={args.roots}",
        "trainer.eval_every=0",
        "logging.wandb=disabled",
        f"env.engines={engines}",
    ]
    if args.cpu:  # small, so that the code path runs in seconds
        overrides += ["rollout.group_size=4", "rollout.plies=4"]
    if not env.get("stockfish"):
        overrides += ['env.reward="none"', "rollout.teacher_forcing_prob=0.0"]
    else:
        overrides += [f'env.stockfish_path="{env["stockfish"]}"']
    overrides += args.overrides
    config = Path(args.config)
    if not config.exists():
        raise RuntimeError(
            f"{config} is missing: the training part needs the repository's examples/"
        )
    cfg = load_config(str(config), overrides)
    bf16 = getattr(cfg.policy, "bf16", None)
    say(f"config {config.name} with {' '.join(overrides)}")
    say(
        f"R={cfg.rollout.roots} G={cfg.rollout.group_size} T={cfg.rollout.plies}; reward "
        f"{cfg.env.options.reward}; "
        f"policy.bf16 = {bf16 if bf16 is not None else 'not a config key in this version'}"
    )
    rows, every = [], []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        t0 = time.perf_counter()
        run = build_run(cfg, Path(tmp), log=lambda line: None)
        build_s = time.perf_counter() - t0
        try:
            for step in range(1, args.warmup + args.steps + 1):
                m = grpo_step(run, step)
                say(
                    f"step {step} ({'warm-up' if step <= args.warmup else 'timed'}): "
                    f"{m['time/step']:.2f} s, "
                    f"{int(m['train/trained_plies'])} trained plies"
                )
                every.append(m)
                if step > args.warmup:
                    rows.append(m)
        finally:
            run.game.close()
    parts = ("step", "rollout", "reward_engine", "policy", "learner", "budget")
    mean = {k: sum(r[f"time/{k}"] for r in rows) / len(rows) for k in parts}
    overhead = sum(r["time/overhead_frac"] for r in rows) / len(rows)
    plies = sum(r["train/trained_plies"] for r in rows) / len(rows)
    for k in parts:
        say(f"  {k:<14}{mean[k]:8.3f} s  {100 * mean[k] / mean['step']:5.1f} %")
    say(
        f"  {'overhead':<14}{overhead * mean['step']:8.3f} s  {100 * overhead:5.1f} %  (outside "
        f"engine and model math)"
    )
    say(
        f"  {plies:.0f} trained plies/step, {plies / mean['step']:.1f} trained plies/s; build "
        f"{build_s:.1f} s"
    )
    searches = [r.get("rollout/reward_searches", float("nan")) for r in rows]
    hits = [r.get("rollout/reward_cache_hit_rate", float("nan")) for r in rows]
    say(
        "  reward searches per step "
        + ", ".join(f"{v:.0f}" for v in searches)
        + "; answered by a repeat or the cache "
        + ", ".join(f"{v:.1%}" for v in hits)
        + "; step times "
        + ", ".join(f"{r['time/step']:.2f}" for r in rows)
        + " s"
    )
    # the RL invariants under this device's numerics (bf16 autocast on CUDA): the first PPO
    # epoch's ratio must be exactly 1 (old and new log-probs come from one function on one
    # layout); the drift compares the sampling forward with that recompute (batch layouts differ)
    checks = {
        "ratio_first_epoch": [r["train/ratio_first_epoch"] for r in every],
        "ratio_first_epoch_maxdev": [r["train/ratio_first_epoch_maxdev"] for r in every],
        "logprob_drift": [r["rollout/logprob_drift"] for r in every],
    }
    say(
        "  invariants over all steps: ratio_first_epoch "
        + ", ".join(f"{v:.6f}" for v in checks["ratio_first_epoch"])
        + "; maxdev "
        + ", ".join(f"{v:.2e}" for v in checks["ratio_first_epoch_maxdev"])
        + "; logprob_drift "
        + ", ".join(f"{v:.2e}" for v in checks["logprob_drift"])
    )
    out = {
        "config": config.name,
        "overrides": overrides,
        "bf16_config": bf16,
        "reward": cfg.env.options.reward,
        "engines": engines,
        "roots": cfg.rollout.roots,
        "steps": len(rows),
        "build_s": round(build_s, 2),
        "time_s": {k: round(v, 4) for k, v in mean.items()},
        "shares": {k: round(mean[k] / mean["step"], 4) for k in parts if k != "step"},
        "overhead_frac": round(overhead, 4),
        "trained_plies_per_step": plies,
        "reward_searches": searches,
        "reward_cache_hit_rate": hits,
        "step_times_s": [round(r["time/step"], 3) for r in rows],
        "trained_plies_per_s": round(plies / mean["step"], 2),
        "invariants": checks,
    }
    if torch.cuda.is_available() and not args.cpu:
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        say(f"  peak CUDA memory allocated {out['max_memory_allocated_gib']} GiB")
    return out


# ------------------------------------------------------------------------------------------
# 3 + 4. learner throughput and efficiency
# ------------------------------------------------------------------------------------------


def policy_flops_per_position(
    obs_len: int,
    n_actions: int,
    d_model: int,
    n_layers: int,
    n_heads: int,
    d_ff: int,
    head_dim: int = 0,
) -> dict:
    """Matmul FLOPs (2 per multiply-add) of one position through the policy, forward.

    The sequence is the observation tokens plus a CLS token; heads split d_model, so the
    attention FLOPs do not depend on n_heads. The head reads the CLS token and, with head_dim > 0,
    head_dim projected features of every observation token. Embedding,
    layer norms, GELU and softmax are not matmuls and are left out (a few % at most).
    """
    L, d, f = obs_len + 1, d_model, d_ff
    per_layer = {
        "qkv": 2 * L * d * 3 * d,
        "attn_scores": 2 * L * L * d,
        "attn_values": 2 * L * L * d,
        "proj": 2 * L * d * d,
        "mlp": 2 * L * d * f * 2,
    }
    head = 2 * (d + obs_len * head_dim) * n_actions + 2 * obs_len * d * head_dim
    forward = n_layers * sum(per_layer.values()) + head
    return {"per_layer": per_layer, "head": head, "forward": forward, "train": 3 * forward}


def _builtin_policy(obs_vocab: int, obs_len: int, n_actions: int, **sizes):
    """chessrl's own Policy, loaded from chessrl/policy.py by path when the package cannot be
    imported (its dependencies are missing here): that file needs nothing but torch."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "chessrl" / "policy.py"
    spec = importlib.util.spec_from_file_location("chessrl_policy_standalone", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Policy(obs_vocab, obs_len, n_actions, **sizes)


def _timed(fn, device, seconds: float, min_iters: int = 3) -> float:
    """Seconds per call of ``fn`` (after 2 warm-up calls), over about ``seconds`` of wall time."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    iters, t0 = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        iters += 1
        if iters % 4 == 0 or iters < min_iters:
            sync()
    sync()
    return (time.perf_counter() - t0) / iters


def matmul_peak(device, n: int, seconds: float) -> float:
    """TFLOP/s of an n x n x n bf16 matmul: the practical dense bf16 peak of the device."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = _timed(lambda: torch.mm(a, b), device, seconds)
    a = b = None  # free the device memory (the lambda above closes over them)
    return 2 * n**3 / t / 1e12


def learner_throughput(args: argparse.Namespace, env: dict) -> dict:
    import torch

    device = torch.device("cpu" if args.cpu else "cuda")
    sizes = dict(DEFAULT_POLICY)
    if env.get("chessrl"):
        from chessrl.envs.chess import encoding as enc
        from chessrl.policy import Policy

        obs_len, obs_vocab, n_actions = enc.OBS_LEN, enc.OBS_VOCAB, enc.N_ACTIONS
        policy = Policy(obs_vocab, obs_len, n_actions, **sizes)
        source = "chessrl.policy.Policy"
    else:
        obs_len, obs_vocab, n_actions = CHESS_OBS_LEN, CHESS_OBS_VOCAB, CHESS_ACTIONS
        policy = _builtin_policy(obs_vocab, obs_len, n_actions, **sizes)
        source = "chessrl/policy.py loaded by path (the chessrl package is not importable)"
    policy = policy.to(device)
    flops = policy_flops_per_position(obs_len, n_actions, **sizes)
    n_params = sum(p.numel() for p in policy.parameters())
    say(
        f"\n== 3. learner throughput: {source}, {n_params / 1e6:.2f} M parameters, obs_len "
        f"{obs_len} (+1 CLS), "
        f"{n_actions} actions, bf16 autocast on {device.type}"
    )
    say(
        "analytic matmul FLOPs per position, forward: "
        + ", ".join(
            f"{k} {v / 1e6:.2f}M x{sizes['n_layers']}" for k, v in flops["per_layer"].items()
        )
        + f", head {flops['head'] / 1e6:.2f}M -> {flops['forward'] / 1e6:.1f} MFLOP; "
        f"x3 for fwd+bwd = {flops['train'] / 1e6:.1f} MFLOP"
    )

    gen = torch.Generator(device="cpu").manual_seed(0)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    batch = args.batch
    result: dict = {
        "policy": source,
        "params": n_params,
        "obs_len": obs_len,
        "n_actions": n_actions,
        **{k: v for k, v in sizes.items()},
        "flops_per_position_fwd": flops["forward"],
        "flops_per_position_train": flops["train"],
    }
    while True:
        try:
            tokens = torch.randint(0, obs_vocab, (batch, obs_len), generator=gen).to(device)
            actions = torch.randint(0, n_actions, (batch,), generator=gen).to(device)

            def train_step():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    logits = policy(tokens)
                logp = torch.log_softmax(
                    logits.float(), dim=-1
                )  # float32 log-probs, as the trainer
                loss = -logp.gather(-1, actions[:, None]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()

            def forward_only():
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                    policy(tokens)

            t_train = _timed(train_step, device, args.seconds)
            t_fwd = _timed(forward_only, device, args.seconds / 2)
            break
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch <= 64:
                raise
            batch //= 2
            say(f"out of memory: retrying at batch {batch}")
    pos_train, pos_fwd = batch / t_train, batch / t_fwd
    say(
        f"batch {batch}: forward+backward {t_train * 1e3:.1f} ms -> {pos_train:,.0f} positions/s; "
        f"forward only {t_fwd * 1e3:.1f} ms -> {pos_fwd:,.0f} positions/s"
    )
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    opt = policy = None  # free the device memory

    say(f"\n== 4. efficiency: bf16 matmul {args.matmul}^3 as the reference peak")
    peak = matmul_peak(device, args.matmul, args.seconds / 2)
    achieved = pos_train * flops["train"] / 1e12
    achieved_fwd = pos_fwd * flops["forward"] / 1e12
    say(f"measured bf16 matmul peak      {peak:10.2f} TFLOP/s")
    say(
        f"achieved (forward+backward)    {achieved:10.2f} TFLOP/s = {achieved / peak:6.1%} of "
        f"the measured matmul peak"
    )
    say(
        f"achieved (forward only)        {achieved_fwd:10.2f} TFLOP/s = "
        f"{achieved_fwd / peak:6.1%} of the measured matmul peak"
    )
    return result | {
        "batch": batch,
        "train_positions_per_s": round(pos_train, 1),
        "fwd_positions_per_s": round(pos_fwd, 1),
        "matmul_n": args.matmul,
        "matmul_peak_tflops": round(peak, 3),
        "achieved_tflops": round(achieved, 3),
        "fraction_of_matmul_peak": round(achieved / peak, 4),
        "achieved_tflops_fwd": round(achieved_fwd, 3),
        "fraction_of_matmul_peak_fwd": round(achieved_fwd / peak, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 timed step, shorter timings (~1 minute)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="run every part on CPU at small sizes (tests the script)"
    )
    parser.add_argument("--steps", type=int, help="timed training steps (default 2; --quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--roots", type=int, help="rollout roots per step (default 32; --cpu 1)")
    parser.add_argument(
        "--engines", type=int, default=0, help="Stockfish processes (default: cores - 2, 2..16)"
    )
    parser.add_argument("--batch", type=int, help="learner batch (default 4096; --cpu 64)")
    parser.add_argument(
        "--matmul", type=int, help="matmul size for the peak (default 8192; --cpu 1024)"
    )
    parser.add_argument(
        "--seconds", type=float, help="timing window per throughput figure (default 5; --quick 2)"
    )
    parser.add_argument(
        "--stockfish", default="/usr/games/stockfish", help="where Stockfish should be"
    )
    parser.add_argument(
        "--config", default=str(CLEAN), help="the config part 2 trains (default clean_proposed)"
    )
    parser.add_argument("--skip-train", action="store_true", help="skip part 2 (training steps)")
    parser.add_argument(
        "--skip-learner", action="store_true", help="skip parts 3 and 4 (learner throughput)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra config override for part 2 (repeatable)",
    )
    args = parser.parse_args()
    args.steps = args.steps or (1 if args.quick or args.cpu else 2)
    args.roots = args.roots or (1 if args.cpu else 32)
    args.batch = args.batch or (64 if args.cpu else 4096)
    args.matmul = args.matmul or (1024 if args.cpu else 8192)
    args.seconds = args.seconds or (1.0 if args.cpu else 2.0 if args.quick else 5.0)

    t0 = time.perf_counter()
    out: dict = {"mode": "cpu" if args.cpu else "cuda", "quick": args.quick}
    env = check_environment(args)
    out["environment"] = env
    errors: dict[str, str] = {}
    can_run = env.get("torch") and (env.get("cuda") or args.cpu)
    if not can_run:
        say("\nstopping: " + ("; ".join(env["missing"]) or "nothing to run on"))
        out["errors"] = {"environment": "; ".join(env["missing"])}
        print(json.dumps(out | {"seconds": round(time.perf_counter() - t0, 1)}))
        return 1
    import torch

    if not args.cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.skip_train:
        say("\n== 2. training: skipped (--skip-train)")
    elif not env.get("chessrl") or "chess" not in env.get("games", []):
        errors["train"] = "skipped: chessrl or its chess game is not available"
        say(f"\n== 2. training: {errors['train']}")
    else:
        try:
            out["train"] = training_steps(args, env)
        except Exception as exc:
            errors["train"] = f"{type(exc).__name__}: {exc}"
            say(f"training FAILED: {errors['train']}")
            traceback.print_exc()
        if not args.cpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    try:
        if args.skip_learner:
            say("\n== 3-4. learner throughput: skipped (--skip-learner)")
        else:
            out["learner"] = learner_throughput(args, env)
    except Exception as exc:
        errors["learner"] = f"{type(exc).__name__}: {exc}"
        say(f"learner throughput FAILED: {errors['learner']}")
        traceback.print_exc()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    say(
        f"\ndone in {out['seconds']:.0f} s"
        + (f"; FAILED parts: {', '.join(errors)}" if errors else "")
        + (f"; missing: {'; '.join(env['missing'])}" if env["missing"] else "")
    )
    if errors:
        out["errors"] = errors
    print(json.dumps(out))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
