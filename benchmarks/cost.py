"""What a million messages cost in Azure, from measured figures: the worker's
CPU per message and the storage operations per message (benchmarks.storage_ops,
benchmarks.whole_path). A calculator, not a measurement: pass the figures of
your own run; the defaults are the README's latest run.

Flex Consumption (on demand) bills the memory of an instance while it
executes (GB-s) plus each execution. A busy instance executes several
messages at once, so its billed time per message is at most its CPU time per
message when the instance is CPU-bound (the best case, printed) and more
when it waits on I/O: `--busy` is the share of billed time the CPU works
(1.0 = CPU-bound). Storage bills each request (a transaction).

Prices (USD, pay as you go; check the current pages before relying on them):
- Flex Consumption on demand: $0.000026 per GB-s of execution time and $0.40
  per million executions: the Azure Functions pricing page
  (https://azure.microsoft.com/pricing/details/functions/), as README.md
  "What it costs" records them; the GB-s price is also quoted by modal.com's
  "Azure Functions pricing: Consumption vs. Flex Consumption" (May 2025).
  Free grants are left out.
- Storage transactions: $0.00036 per 10,000, the Table storage (standard LRS)
  list price as remembered: no primary source was found when this was written,
  so check https://azure.microsoft.com/pricing/details/storage/tables/; queue
  operations on a general-purpose v2 account are priced per class and may cost
  more: pass --table-price / --queue-price.

This is the CPU-bound case (several tenants' sends overlapping on busy
instances). A single tenant paced at Teams' 50/s keeps an instance busy
longer per message: README.md "What it costs" gives that bound.

    .venv/bin/python -m benchmarks.cost [--cpu-ms 1.35] [--table-ops 2.27] [--queue-ops 1.04]
"""

from __future__ import annotations

import argparse

from benchmarks._common import header, note

GB_S = 0.000026
PER_EXECUTION = 0.40 / 1e6
PER_TRANSACTION = 0.00036 / 1e4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-ms", type=float, default=1.35,
                        help="worker CPU per message without the host's queue operations")
    parser.add_argument("--table-ops", type=float, default=2.27, help="table requests/message")
    parser.add_argument("--queue-ops", type=float, default=1.04,
                        help="queue requests/message (the host's receive share and delete)")
    parser.add_argument("--memory-gb", type=float, default=2.0,
                        help="instance memory (Flex Consumption: 0.5, 2 or 4 GB)")
    parser.add_argument("--busy", type=float, default=1.0,
                        help="share of billed instance time the CPU works (1.0 = CPU-bound)")
    parser.add_argument("--table-price", type=float, default=PER_TRANSACTION * 1e4,
                        help="USD per 10,000 table transactions")
    parser.add_argument("--queue-price", type=float, default=PER_TRANSACTION * 1e4,
                        help="USD per 10,000 queue transactions")
    args = parser.parse_args(argv)
    million = 1e6
    compute = million * args.cpu_ms / 1000 / max(args.busy, 0.01) * args.memory_gb * GB_S
    executions = million * PER_EXECUTION
    tables = million * args.table_ops * args.table_price / 1e4
    queues = million * args.queue_ops * args.queue_price / 1e4
    header(f"Cost of a million messages (Flex Consumption on demand, {args.memory_gb:g} GB "
           f"instances, CPU {args.cpu_ms:g} ms/message, busy {args.busy:.0%})")
    for label, usd in (("execution time (GB-s)", compute), ("executions", executions),
                       (f"table transactions ({args.table_ops:g}/message)", tables),
                       (f"queue transactions ({args.queue_ops:g}/message)", queues)):
        note(f"{label:<44} ${usd:8.3f}")
    note(f"{'total per million messages':<44} ${compute + executions + tables + queues:8.3f}")
    note("prices and their sources: `python -m benchmarks.cost --help`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
