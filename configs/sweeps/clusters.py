"""Issue 7 section 2: do cross-lingual pairs drawn within clusters of similar languages beat
uniformly random pairs? Hybrid batches (alpha 0.5) at the budget of configs/sweeps/strategies_t0_01.py,
trained on MLQA-R (ar de en es hi vi zh) and evaluated on XQuAD-R, whose el ru th tr are unseen
in training; 3 seeds:

  hybrid          cross pairs uniform over the ordered language pairs (the baseline)
  hybrid_family   80 % of cross pairs within a family (on MLQA-R: de en es hi are indo-european,
                  12 of the 42 ordered pairs; ar, vi and zh are each alone, so only across)
  hybrid_script   80 % of cross pairs within a script (on MLQA-R: de en es vi are latin, 12 of the
                  42 ordered pairs; the other languages each alone)
  hybrid_model    80 % of cross pairs within one of 3 clusters computed at start from the base
                  model (mean embeddings of parallel training sentences, agglomerative; the run's
                  clusters.json, kept in its summary)

The clusters are hbt.batches.clusters.FAMILY and SCRIPT and the model's; cluster_p_in 0.8 is a
first guess, not tuned.

  python -m hbt.experiments.sweep --sweep=configs/sweeps/clusters.py --workdir=runs/clusters
  python -m hbt.experiments.report --runs=docs/results/runs/clusters --out=docs/results.md
"""

from configs.sweeps import strategies_t0_01

P_IN = 0.8


def get_sweep():
  base = strategies_t0_01.get_sweep()
  hybrid = base['arms']['hybrid']
  arms = {'hybrid': hybrid,
          'hybrid_family': {**hybrid, 'train.lang_clusters': 'family', 'train.cluster_p_in': P_IN},
          'hybrid_script': {**hybrid, 'train.lang_clusters': 'script', 'train.cluster_p_in': P_IN},
          'hybrid_model': {**hybrid, 'train.lang_clusters': 'model', 'train.cluster_count': 3,
                           'train.cluster_p_in': P_IN}}
  return {
      'name': 'clusters',
      'config': base['config'],
      'budget': base['budget'],
      'directions': {'mlqa_to_xquad': base['directions']['mlqa_to_xquad']},
      'arms': arms,
      'seeds': base['seeds'],
      'contrasts': (('hybrid_family', 'hybrid'), ('hybrid_script', 'hybrid'),
                    ('hybrid_model', 'hybrid'), ('hybrid_script', 'hybrid_family')),
  }
