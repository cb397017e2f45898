"""``jaxsae demo``: the showcase on built-in data, written as a report."""

from __future__ import annotations

NAME = "demo"
HELP = "learn a certified dictionary and an SAE on built-in data; write a report with figures"
EPILOG = """examples:
  jaxsae demo                      # full demo (~3 min on 2 CPU cores), report in demo-report/
  jaxsae demo --quick --out /tmp/r # small sizes (< 60 s)
"""


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes, finishes in under a minute")
    p.add_argument("--out", default="demo-report", help="report folder (default: demo-report)")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def run(args) -> int:
    from ..report._demo import demo_report

    demo_report(args.out, quick=args.quick, seed=args.seed)
    print(
        f"\nReport: {args.out}/report.md (figures: {args.out}/*.png, numbers: {args.out}/report.json)"
    )
    return 0
