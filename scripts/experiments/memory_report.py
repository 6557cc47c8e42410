"""Write docs/results/memory/first-round/README.md from the benchmark JSON files beside it."""

import json
from pathlib import Path

BASE = Path(__file__).resolve().parents[2] / "docs" / "results" / "memory" / "first-round"
MIB = 2**20


def mem_table(name: str) -> str:
    recs = json.loads((BASE / f"{name}.json").read_text())["records"]
    out = [
        "| config | B | peak above first step | peak incl. weights | vs e2e | paper formula "
        "| saved activations | params | grads | optimizer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        out.append(
            f"| {r['config']} | {r['blocks']} | {r['peak_bytes'] / MIB:.1f} MiB "
            f"| {r['peak_with_weights_bytes'] / MIB:.1f} MiB "
            f"| {r['peak_with_weights_ratio_to_e2e']:.3f}x | {r['predicted_bytes'] / MIB:.1f} MiB "
            f"| {r['activation_bytes'] / MIB:.1f} MiB | {r['param_bytes'] / MIB:.2f} MiB "
            f"| {r['grad_bytes'] / MIB:.2f} MiB | {r['optimizer_bytes'] / MIB:.2f} MiB |"
        )
    return "\n".join(out)


def speed_table(name: str) -> str:
    recs = json.loads((BASE / f"{name}.json").read_text())["records"]
    out = [
        "| config | B | median step | vs e2e | median paired ratio | inference (batch) "
        "| vs e2e forward |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        inf = r.get("median_inference_seconds")
        inf_text = "-" if inf is None else f"{inf * 1000:.1f} ms"
        ratio = "-" if inf is None else f"{r['inference_ratio_to_e2e']:.3f}x"
        out.append(
            f"| {r['config']} | {r['blocks']} | {r['median_step_seconds'] * 1000:.1f} ms "
            f"| {r['step_ratio_to_e2e']:.3f}x | {r['median_paired_step_ratio']:.3f}x "
            f"| {inf_text} | {ratio} |"
        )
    return "\n".join(out)


def main() -> None:
    template = (BASE / "README.template.md").read_text()
    for name in (
        "bench-memory-cpu",
        "bench-memory-cuda",
        "bench-memory-cpu-glibc-default",
        "bench-memory-cpu-batch8",
    ):
        if (BASE / f"{name}.json").exists():
            template = template.replace("{{" + name + "}}", mem_table(name))
    for name in ("bench-speed-cpu", "bench-speed-cuda"):
        template = template.replace("{{" + name + "}}", speed_table(name))
    (BASE / "README.md").write_text(template)


if __name__ == "__main__":
    main()
