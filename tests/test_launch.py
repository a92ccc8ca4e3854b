"""Tests of the launch/*.sh scripts: syntax (bash -n), dry-run mode, and the sweep fan-out.

Every external command the scripts may call (gcloud, ssh, git, nvidia-smi, python) is a stub on
PATH that records its arguments: a dry run must call none of them and print each command,
shell-quoted (checked with shlex); a real run of the sweep launcher calls them as printed.
"""

import os
import shlex
import stat
import subprocess

import pytest

from tests import conftest

LAUNCH = conftest.REPO / 'launch'
SCRIPTS = sorted(LAUNCH.glob('*.sh'))
STUBS = ('gcloud', 'ssh', 'git', 'nvidia-smi', 'python', 'tar')


@pytest.fixture()
def stubs(tmp_path):
  """A bin/ of recording stubs and the file they append 'NAME ARGS...' to (one line per call)."""
  bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls.txt'
  bin_dir.mkdir()
  for name in STUBS:
    path = bin_dir / name
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >> {calls}\n'
                    'exit ${STUB_STATUS:-0}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return bin_dir, calls


def launch(script, *args, stubs, env=None, check=True):
  bin_dir, _ = stubs
  full_env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'HBT_PYTHON': 'python',
              **(env or {})}
  for key in ('DRY_RUN', 'HOSTS', 'GPUS', 'HBT_CONFIG', 'HBT_DATA_DIR'):
    if key not in (env or {}):
      full_env.pop(key, None)
  result = subprocess.run(['bash', str(LAUNCH / script), *args], env=full_env,
                          capture_output=True, text=True, timeout=60, check=False,
                          cwd=stubs[0].parent)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def printed(result) -> list[list[str]]:
  return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def calls(stubs) -> list[str]:
  return stubs[1].read_text().splitlines() if stubs[1].exists() else []


@pytest.mark.parametrize('script', SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_bash_syntax(script):
  subprocess.run(['bash', '-n', str(script)], check=True)


def test_every_launcher_has_a_dry_run_mode():
  for script in SCRIPTS:
    if script.name != 'common.sh':
      text = script.read_text()
      assert 'source "$(dirname "$0")/common.sh"' in text and 'DRY_RUN' in text, script.name


def test_tpu_vm_all_dry_run(stubs):
  result = launch('tpu_vm.sh', '--dry-run', 'all', 'hbt-v4', 'us-central2-b', 'v4-32',
                  'gs://bucket/runs/h', 'results', '--config.train.alpha=0.3',
                  '--config.eval.langs=en,de', stubs=stubs, env={'HBT_DATA_DIR': '/data dir'})
  assert calls(stubs) == []  # nothing ran
  cmds = printed(result)
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  assert cmds[0] == tpu + ['create', 'hbt-v4', '--zone=us-central2-b', '--accelerator-type=v4-32',
                           '--version=tpu-ubuntu2204-base']
  assert cmds[1] == ['git', '-C', str(conftest.REPO), 'archive', '--format=tar.gz', '-o',
                     cmds[1][-2], 'HEAD']
  assert cmds[2] == tpu + ['scp', '--zone=us-central2-b', '--worker=all', cmds[1][-2],
                           'hbt-v4:hbt.tar.gz']
  install = cmds[3][-1]
  assert cmds[3][:-1] == tpu + ['ssh', 'hbt-v4', '--zone=us-central2-b', '--worker=all']
  assert "sed -n '/^# tests/q;p' requirements.txt > requirements-run.txt" in install
  assert "pip install -q 'jax[tpu]==0.10.2'" in install
  assert cmds[4][:-1] == tpu + ['ssh', 'hbt-v4', '--zone=us-central2-b', '--worker=all']
  remote = shlex.split(cmds[4][-1].split(' && ')[-1])  # the command each worker runs
  assert remote == ['HBT_MULTIHOST=1', 'HBT_DATA_DIR=/data dir', 'python', '-m', 'hbt.main',
                    '--config=configs/paper.py', '--workdir=gs://bucket/runs/h',
                    '--config.train.alpha=0.3', '--config.eval.langs=en,de']
  assert cmds[5] == ['mkdir', '-p', 'results']
  assert cmds[6] == ['gcloud', 'storage', 'cp', '--recursive', 'gs://bucket/runs/h/eval',
                     'gs://bucket/runs/h/tensorboard', 'results']
  assert len(cmds) == 8 and 'delete hbt-v4 us-central2-b' in result.stdout.splitlines()[-1]


def test_tpu_vm_fetch_local_workdir_and_delete(stubs):
  fetch = printed(launch('tpu_vm.sh', 'fetch', 'vm', 'z', '/home/me/run', 'out', stubs=stubs,
                         env={'DRY_RUN': '1'}))
  assert fetch[1] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', '--recurse', '--zone=z',
                      '--worker=0', 'vm:/home/me/run/eval', 'vm:/home/me/run/tensorboard', 'out']
  delete = printed(launch('tpu_vm.sh', '--dry-run', 'delete', 'vm', 'z', stubs=stubs))
  assert delete == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'vm', '--zone=z',
                     '--quiet']]
  assert calls(stubs) == []


def test_tpu_vm_runs_for_real_without_dry_run(stubs):
  launch('tpu_vm.sh', 'delete', 'vm', 'z', stubs=stubs)
  assert calls(stubs) == ['gcloud compute tpus tpu-vm delete vm --zone=z --quiet']


@pytest.mark.parametrize('args, error', [
    (['create', 'vm', 'z'], 'create NAME ZONE ACCELERATOR'),
    (['reboot', 'vm', 'z'], "unknown command 'reboot'"),
])
def test_tpu_vm_bad_usage(stubs, args, error):
  result = launch('tpu_vm.sh', '--dry-run', *args, stubs=stubs, check=False)
  assert result.returncode == 2 and error in result.stderr
  assert 'launch/tpu_vm.sh [--dry-run] create' in result.stderr  # the usage


def test_gpu_dry_run(stubs):
  result = launch('gpu.sh', '--dry-run', 'run', 'runs/g', '--config.train.batch_size=64',
                  stubs=stubs, env={'GPUS': '2'})
  check, main = printed(result)
  assert check[:3] == ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'python']
  assert main == ['env', 'CUDA_VISIBLE_DEVICES=0,1', 'python', '-m', 'hbt.main',
                  '--config=configs/paper.py', '--workdir=runs/g',
                  '--config.train.batch_size=64']
  all_gpus = printed(launch('gpu.sh', 'run', 'runs/g', stubs=stubs, env={'DRY_RUN': '1'}))
  assert all_gpus[1] == ['python', '-m', 'hbt.main', '--config=configs/paper.py',
                         '--workdir=runs/g']
  install = printed(launch('gpu.sh', '--dry-run', 'install', stubs=stubs))
  assert install == [['python', '-m', 'pip', 'install', 'jax[cuda12]==0.10.2']]
  assert calls(stubs) == []
  bad = launch('gpu.sh', '--dry-run', 'run', 'runs/g', stubs=stubs, env={'GPUS': 'two'},
               check=False)
  assert bad.returncode == 2 and "GPUS must be a positive integer, got 'two'" in bad.stderr


def test_multihost_dry_run(stubs):
  cmds = printed(launch('multihost.sh', '--dry-run', '2', 'runs/mh', '--config.train.steps=4',
                        stubs=stubs))
  assert cmds == [['python', '-m', 'hbt.main', '--config=configs/xquad.py', '--workdir=runs/mh',
                   '--coordinator=localhost:12355', '--num_processes=2', f'--process_id={i}',
                   '--config.train.steps=4'] for i in range(2)]
  assert calls(stubs) == []


def test_multihost_starts_every_process_and_returns_a_failure(stubs, tmp_path):
  """For real (no dry run): N processes in the background, each logging to WORKDIR.process<i>.log;
  the script waits for all, shows process 0's log and exits with a failed process's status."""
  bin_dir, calls_file = stubs
  (bin_dir / 'python').write_text(
      '#!/usr/bin/env bash\n'
      f'printf "%s\\n" "python $*" >> {calls_file}\n'
      'for a in "$@"; do case $a in --process_id=*) id=${a#*=};; esac; done\n'
      'echo "process $id ran"\n'
      '[[ $id == 1 ]] && exit 3\n'
      'exit 0\n')
  workdir = tmp_path / 'mh'
  result = launch('multihost.sh', '2', str(workdir), '--config.train.steps=4', stubs=stubs,
                  env={'HBT_COORDINATOR_PORT': '23456'}, check=False)
  assert result.returncode == 3, result.stderr
  assert result.stdout.strip() == 'process 0 ran'  # the tail of process 0's log
  for i in range(2):
    assert (tmp_path / f'mh.process{i}.log').read_text() == f'process {i} ran\n'
  assert sorted(calls(stubs)) == [
      f'python -m hbt.main --config=configs/xquad.py --workdir={workdir} '
      f'--coordinator=localhost:23456 --num_processes=2 --process_id={i} --config.train.steps=4'
      for i in range(2)]


@pytest.mark.parametrize('script', [s for s in SCRIPTS if s.name != 'common.sh'],
                         ids=lambda s: s.name)
def test_without_arguments_prints_usage(stubs, script):
  """BUILD.md: 'Run launch/X.sh without arguments for its usage' (its header comment), exit 2."""
  result = launch(script.name, stubs=stubs, check=False)
  header = script.read_text().splitlines()[1].lstrip('# ')
  assert result.returncode == 2 and result.stderr.startswith('error: ')
  assert header in result.stderr
  assert calls(stubs) == []


RUNS = """# the paper's baselines
hybrid   --config.train.strategy=hybrid --config.train.alpha=0.5
x_x_mono --config.train.strategy=x_x_mono

en_en    --config.train.strategy=en_en   # English only
"""


def expected_runs(root):
  main = ['python', '-m', 'hbt.main', '--config=configs/xquad.py']
  return {'hybrid': main + [f'--workdir={root}/hybrid', '--config.train.strategy=hybrid',
                            '--config.train.alpha=0.5', '--config.train.steps=3'],
          'x_x_mono': main + [f'--workdir={root}/x_x_mono', '--config.train.strategy=x_x_mono',
                              '--config.train.steps=3'],
          'en_en': main + [f'--workdir={root}/en_en', '--config.train.strategy=en_en',
                           '--config.train.steps=3']}


def test_sweep_lines_dry_run_then_in_sequence(stubs, tmp_path):
  runs = tmp_path / 'runs.txt'
  runs.write_text(RUNS)
  expected = expected_runs('out')
  dry = launch('sweep.sh', '--dry-run', 'lines', str(runs), 'out', '--config.train.steps=3',
               stubs=stubs)
  assert printed(dry) == list(expected.values())
  assert calls(stubs) == []
  launch('sweep.sh', 'lines', str(runs), 'out', '--config.train.steps=3', stubs=stubs)
  assert [shlex.split(c) for c in calls(stubs)] == list(expected.values())


def test_sweep_lines_go_on_after_a_failed_run(stubs, tmp_path):
  runs = tmp_path / 'runs.txt'
  runs.write_text(RUNS)
  result = launch('sweep.sh', 'lines', str(runs), 'out', stubs=stubs, env={'STUB_STATUS': '1'},
                  check=False)
  assert result.returncode == 1
  assert len(calls(stubs)) == 3
  assert 'failed runs: hybrid x_x_mono en_en' in result.stderr


def test_sweep_lines_over_hosts(stubs, tmp_path):
  """Round-robin over 2 hosts: a stub ssh runs each host's command here, in the repo."""
  bin_dir, calls_file = stubs
  (bin_dir / 'ssh').write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "ssh $1" >> {calls_file}\n'
                               'exec bash -c "$2"\n')
  runs = tmp_path / 'runs.txt'
  runs.write_text(RUNS)
  expected = expected_runs('gs://b/s')
  result = launch('sweep.sh', 'lines', str(runs), 'gs://b/s', '--config.train.steps=3',
                  stubs=stubs, env={'HOSTS': 'h1,h2', 'LOGS': str(tmp_path / 'logs')})
  assert result.returncode == 0
  lines = calls(stubs)
  assert sorted(l for l in lines if l.startswith('ssh')) == ['ssh h1', 'ssh h2']
  ran = [shlex.split(l) for l in lines if l.startswith('python')]
  assert sorted(map(tuple, ran)) == sorted(map(tuple, expected.values()))
  # h1 ran hybrid then en_en (in that order), h2 x_x_mono.
  assert ran.index(expected['hybrid']) < ran.index(expected['en_en'])
  assert (tmp_path / 'logs' / 'h1.log').exists() and (tmp_path / 'logs' / 'h2.log').exists()
  dry = launch('sweep.sh', '--dry-run', 'lines', str(runs), 'gs://b/s', stubs=stubs,
               env={'HOSTS': 'h1,h2'})
  h1 = printed(dry)[1]
  assert h1[:2] == ['ssh', 'h1'] and h1[2].startswith(f'cd {conftest.REPO} && failed=0; ')
  assert h1[2].endswith('|| failed=1; exit $failed')


@pytest.mark.parametrize('line, error', [
    ('bad/name --config.seed=1', "runs.txt:1: run name 'bad/name'"),
    ('ok config.seed=1', "runs.txt:1: 'config.seed=1' is not a flag"),
    ('# only a comment', 'holds no run'),
])
def test_sweep_lines_bad_file(stubs, tmp_path, line, error):
  runs = tmp_path / 'runs.txt'
  runs.write_text(line + '\n')
  result = launch('sweep.sh', '--dry-run', 'lines', str(runs), 'out', stubs=stubs, check=False)
  assert result.returncode == 2 and error in result.stderr


def test_sweep_runner_dry_run(stubs):
  here = printed(launch('sweep.sh', '--dry-run', 'sweep', 'configs/sweeps/strategies.py',
                        'runs/st', stubs=stubs))
  assert here == [['python', '-m', 'hbt.experiments.sweep',
                   '--sweep=configs/sweeps/strategies.py', '--workdir=runs/st']]
  hosts = printed(launch('sweep.sh', '--dry-run', 'sweep', 'configs/sweeps/strategies.py',
                         'runs/st', 'h1=*.seed0', 'h2=*.seed1,*.seed2', '--', '--max_runs=3',
                         stubs=stubs))
  assert hosts[0] == ['mkdir', '-p', 'sweep-logs']
  for (ssh, host, remote), glob in zip(hosts[1:], ('*.seed0', '*.seed1,*.seed2')):
    assert ssh == 'ssh' and host in ('h1', 'h2')
    cd, command = remote.split(' && ')
    assert cd == f'cd {conftest.REPO}'
    assert shlex.split(command) == ['python', '-m', 'hbt.experiments.sweep',
                                    '--sweep=configs/sweeps/strategies.py', '--workdir=runs/st',
                                    '--max_runs=3', f'--only={glob}']
  assert calls(stubs) == []


def test_common_dry_run_flag_is_shifted(stubs):
  """--dry-run is consumed by common.sh: the script sees its own arguments only."""
  result = launch('multihost.sh', '--dry-run', '1', 'w', stubs=stubs)
  assert '--dry-run' not in result.stdout
  assert printed(result)[0][-1] == '--process_id=0'
