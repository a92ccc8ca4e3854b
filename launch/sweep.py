"""Print (or run) the commands of a sweep: one workdir per setting, e.g. the paper's baselines.

  python launch/sweep.py --root=runs/sweep                 # print the commands
  python launch/sweep.py --root=runs/sweep --run           # run them one after another
  python launch/sweep.py --root=runs/sweep --sweep=alpha   # alpha in 0.0 .. 1.0
Extra flags after -- go to every run, e.g. -- --config.train.steps=1000.
"""

import argparse
import shlex
import subprocess
import sys

SWEEPS = {
    # The paper's comparison: hybrid batches against the four baselines.
    'strategy': [{'train.strategy': s} for s in ('hybrid', 'x_x_mono', 'x_y', 'x_x', 'en_en')],
    # The paper's sensitivity study of alpha (0.5 best, stable for 0.4-0.6).
    'alpha': [{'train.strategy': 'hybrid', 'train.alpha': a}
              for a in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)],
}


def commands(root: str, sweep: str, config: str, extra: list[str]) -> list[list[str]]:
  """One hbt.main command per setting of the sweep."""
  out = []
  for setting in SWEEPS[sweep]:
    name = '_'.join(f'{k.split(".")[-1]}{v}' for k, v in setting.items())
    out.append([sys.executable, '-m', 'hbt.main', f'--config={config}',
                f'--workdir={root}/{sweep}/{name}',
                *(f'--config.{k}={v}' for k, v in setting.items()), *extra])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', required=True, help='Parent folder of the runs.')
  parser.add_argument('--sweep', choices=sorted(SWEEPS), default='strategy')
  parser.add_argument('--config', default='configs/xquad.py')
  parser.add_argument('--run', action='store_true', help='Run the commands sequentially.')
  args, extra = parser.parse_known_args()
  extra = [e for e in extra if e != '--']
  for cmd in commands(args.root, args.sweep, args.config, extra):
    print(shlex.join(cmd), flush=True)
    if args.run:
      subprocess.run(cmd, check=True)


if __name__ == '__main__':
  main()
