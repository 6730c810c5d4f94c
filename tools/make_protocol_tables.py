#!/usr/bin/env python3
"""Make the mini lab's four protocol tables the choose page reads (`results_file('mini_protocol_<protocol>')`): every
registered strategy under each protocol, seeds 1, 2, 3, plus WiSE-FT of each `full` run (α chosen on validation).

Each protocol is `clip_strategies_compare --config mini --seeds 1,2,3 --protocol P --jobs J --out WORK/P`, so a folder
made by that command is resumed, not redone. About an hour on two CPU cores for all four.
"""
import argparse, json, sys
from pathlib import Path
from clip_strategies.compare import compare, PROTOCOLS
from clip_strategies.protocols import wise_rows
from clip_strategies.core import atomic_write, results_file

SEEDS = [1, 2, 3]

def shipped_row(row:dict)->dict:
    "A row as the package keeps it: the numbers, without the recipe card (it stays in the run's folder)."
    return {k: v for k, v in row.items() if not k.startswith('card.')}

def make_table(protocol:str, work:Path, jobs:int, progress:bool)->Path:
    "Run (or resume) one protocol's comparison, add its WiSE-FT rows, and write the shipped table."
    res = compare(seeds=SEEDS, config='mini', protocol=protocol, out=work/protocol, jobs=jobs, progress=progress)
    if res['failed']: sys.exit(f"error: {len(res['failed'])} runs failed, e.g. {res['failed'][0]}: fix them and run again (finished runs are kept)")
    rows = [shipped_row(r) for r in res['rows'] + wise_rows(res['out'], protocol)]
    path = atomic_write(results_file(f'mini_protocol_{protocol}', must_exist=False), json.dumps(rows, indent=1))
    print(f"{protocol}: {len(rows)} rows -> {path}")
    return path

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--work', default='output/protocol_tables', help="the comparisons' folders (resumed where they exist)")
    ap.add_argument('--jobs', type=int, default=2, help='runs at once')
    ap.add_argument('--protocols', default=','.join(PROTOCOLS), help='comma-separated, of: ' + ', '.join(PROTOCOLS))
    ap.add_argument('--no-progress', action='store_true')
    a = ap.parse_args(argv)
    wanted = [p.strip() for p in a.protocols.split(',') if p.strip()]
    bad = [p for p in wanted if p not in PROTOCOLS]
    if bad: sys.exit(f"error: unknown protocol(s) {', '.join(bad)}: allowed: {', '.join(PROTOCOLS)}")
    for p in wanted: make_table(p, Path(a.work), a.jobs, not a.no_progress)

if __name__ == '__main__': main()
