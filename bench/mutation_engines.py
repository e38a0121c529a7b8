"""Two mutation engines on one component, through the same runner: how many mutants, how many the
battery kills, what survives, and what it costs. The figures behind the choice of engine
(bench/RESULTS.md, "Mutation engines").

    pip install cosmic-ray   # the engine Albor does not use, only for this comparison
    python bench/mutation_engines.py cursor --workers 2

Both engines' mutants run through ``albor.verify.generated.run_contract``: the same clean-copy
probe, the same coverage-based choice of falsifiers, the same workers. cosmic-ray runs every
operator that takes no arguments; Albor's engine is mutmut's operators (``albor.verify.engine``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

from albor.verify import engine, generated
from albor.verify.contracts import load_contracts


def cosmic_ray_mutations(file: str, source: str) -> list[engine.Mutation]:
    """Every mutant cosmic-ray's argument-free operators make of ``source``."""
    import cosmic_ray.plugins
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.mutating import mutate_code

    out, seen = [], {source}
    for name in cosmic_ray.plugins.operator_names():
        cls = cosmic_ray.plugins.get_operator(name)
        if cls.arguments():
            continue
        op = cls()
        positions = [p for node in ast_nodes(get_ast(source)) for p in op.mutation_positions(node)]
        for occurrence, ((line, _), (end, _)) in enumerate(positions):
            text = mutate_code(source, op, occurrence)
            if text is None or text in seen:
                continue
            seen.add(text)
            diff = engine.unified_diff(file, source, text)
            key = engine._key(file, "", name, diff)
            out.append(engine.Mutation(key, file, line, end, "", name.split("/")[-1], text, diff))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("component")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/mutation_engines.json"))
    args = parser.parse_args()
    contract = load_contracts()[args.component]
    rows = {}
    for name, make in (("mutmut operators", engine.mutations), ("cosmic-ray", cosmic_ray_mutations)):
        start, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        with generated.workers(args.workers) as pool:
            run = generated.run_contract(contract, pool, make=make)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        survivors = [m for m in run["mutants"] if m["status"] == "survived"]
        rows[name] = {
            "mutants": run["total"],
            "killed": run["killed"],
            "survived": run["survived"],
            "score": run["score"],
            "wall_s": round(time.perf_counter() - start, 1),
            "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
            "operators": dict(Counter(m["operator"] for m in run["mutants"]).most_common()),
            "survivor_operators": dict(Counter(m["operator"] for m in survivors).most_common()),
            "survivors": [m["diff"] for m in survivors],
        }
        print(f"{name}: {json.dumps({k: v for k, v in rows[name].items() if k != 'survivors'})}", flush=True)
    args.out.write_text(json.dumps({"component": args.component, "cpus": os.cpu_count(), **rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
