"""A pure-functional Flax (linen) encoder of the BERT / XLM-R family.

Embeddings (word + position + token type, LayerNorm), post-LN transformer layers (scanned, so the
layer stack compiles once), mean, CLS or CLS-and-pooler pooling and L2 normalisation. Every
parameter carries a logical axis name ('vocab', 'embed', 'heads', 'mlp', 'layers', 'positions') so a
mesh can shard it, and so do the hidden states ('batch', 'length', 'act_embed', 'heads', 'mlp'; see
hbt/sharding.py).

Matmuls take inputs in `dtype` (float32 or bfloat16) and accumulate in float32
(`preferred_element_type`), which is what uses the AMX units of a Sapphire Rapids CPU and the tensor
cores of a GPU/TPU. The residual stream, LayerNorm, softmax and pooling stay in float32.

Packed rows: with `num_texts`, each row may hold several texts, `mask` giving each token's text
(segment) id, i + 1 for text i, 0 on padding. Attention is then block-diagonal (a token sees only
its own text), positions restart at each text, and pooling is per text, so the embeddings equal
those of the texts encoded one per row.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


# 'mean' over unmasked tokens (E5, XLM-R); 'cls' (first token); 'cls_pooler': first token through
# BERT's pooler, tanh(dense(.)), as LaBSE's sentence embedding.
POOLINGS = ('mean', 'cls', 'cls_pooler')
# 'matmul': scores, softmax and context as explicit matmuls (every backend; attention dropout).
# 'fused': jax.nn.dot_product_attention, cuDNN's fused (flash) attention on a GPU and XLA's
# elsewhere, wherever attention dropout is off (evaluation, or dropout_rate 0); 'matmul' otherwise.
ATTENTIONS = ('matmul', 'fused')


@dataclasses.dataclass(frozen=True)
class Arch:
  """The architecture of a checkpoint (read from its files, not set by hand)."""

  vocab_size: int
  hidden: int
  layers: int
  heads: int
  mlp: int
  max_positions: int
  type_vocab_size: int
  position_offset: int  # XLM-R numbers positions from padding_idx + 1 = 2; BERT from 0.
  layer_norm_eps: float
  pad_id: int


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [..., K] @ kernel [K, N] in the inputs' dtype with float32 accumulation and output.

  The backward pass casts the incoming gradient to the inputs' dtype, so that both of its matmuls
  also run with bf16 inputs and f32 accumulation (XLA's CPU backend otherwise falls back to slow
  mixed f32 x bf16 dots).
  """
  return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _matmul_fwd(x, kernel):
  return matmul(x, kernel), (x, kernel)


def _matmul_bwd(residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  batch_dims = tuple(range(x.ndim - 1))
  dk = jax.lax.dot_general(x, g, ((batch_dims, batch_dims), ((), ())),
                           preferred_element_type=jnp.float32)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def batched_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """[G, M, K] @ [G, K, N] -> float32 [G, M, N]; backward as in `matmul`."""
  return jax.lax.dot_general(a, b, (((2,), (1,)), ((0,), (0,))),
                             preferred_element_type=jnp.float32)


def _batched_matmul_fwd(a, b):
  return batched_matmul(a, b), (a, b)


def _batched_matmul_bwd(residuals, g):
  a, b = residuals
  g = g.astype(a.dtype)
  da = jax.lax.dot_general(g, b, (((2,), (2,)), ((0,), (0,))), preferred_element_type=jnp.float32)
  db = jax.lax.dot_general(a, g, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
  return da.astype(a.dtype), db.astype(b.dtype)


batched_matmul.defvjp(_batched_matmul_fwd, _batched_matmul_bwd)


def _constrain(x, axes):
  """Shards a hidden state by logical axis names (no-op outside sharding.with_activation_rules)."""
  return nn.with_logical_constraint(x, axes)


def _param(module, name, init, shape, axes):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Dense(nn.Module):
  """y = x @ kernel + bias with `dtype` inputs and float32 accumulation."""

  features: int
  axes: tuple[str, str]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = _param(self, 'kernel', nn.initializers.normal(0.02), (x.shape[-1], self.features),
                    self.axes)
    bias = _param(self, 'bias', nn.initializers.zeros, (self.features,), self.axes[1:])
    return matmul(x.astype(self.dtype), kernel.astype(self.dtype)) + bias


class LayerNorm(nn.Module):
  """LayerNorm in float32 with logical axis names on scale and bias."""

  eps: float

  @nn.compact
  def __call__(self, x):
    scale = _param(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',))
    bias = _param(self, 'bias', nn.initializers.zeros, (x.shape[-1],), ('embed',))
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias


def _mix32(x: jax.Array) -> jax.Array:
  """A bijective avalanche hash of uint32 (Wellons' lowbias32): each output bit depends on all."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7feb352d)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846ca68b)
  return x ^ (x >> 16)


def keep_mask(key: jax.Array, rows: jax.Array, shape: tuple[int, ...], keep: float) -> jax.Array:
  """bool [len(rows), *shape], True with probability `keep`, a function of (key, row, position).

  A counter-based hash of the key's words, the row id and the element's index: elementwise
  integer ops that XLA fuses, some 30x cheaper on CPU than threefry bits per row
  (bench/bench_dropout.py), which cost about a tenth of a train step. Statistical quality is
  what dropout needs (tests/test_dropout.py), not a cryptographic stream.
  """
  words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
  size = math.prod(shape)
  index = jax.lax.broadcasted_iota(jnp.uint32, (rows.shape[0], size), 1)
  row = _mix32(rows.astype(jnp.uint32)[:, None] ^ words[0])
  bits = _mix32(_mix32(index ^ words[-1]) ^ row)
  threshold = jnp.uint32(min(int(keep * 2.0**32), 2**32 - 1))
  return (bits < threshold).reshape(rows.shape[0], *shape)


class Dropout(nn.Module):
  """Dropout whose mask for each example depends only on the rng and the example's row id.

  So an example gets the same mask in whichever batch, micro-batch or device it sits (GradCache
  re-embeds micro-batches and must see the one-shot step's masks). Masks: `keep_mask`.
  """

  rate: float

  @nn.compact
  def __call__(self, x, rows, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    key, keep = self.make_rng('dropout'), 1.0 - self.rate
    kept = keep_mask(key, rows, x.shape[1:], keep)
    return jnp.where(kept, x / keep, 0.0).astype(x.dtype)


def fused_attention(q, k, v, attn_bias):
  """Attention by jax.nn.dot_product_attention: q, k, v [B, L, heads, D]; bias [B, 1, 1|L, L].

  cuDNN's fused kernel on a GPU (the bias broadcast to [B, 1, L, L] in q's dtype, as it takes it),
  XLA's implementation elsewhere; softmax in float32 in both.
  """
  on_gpu = jax.default_backend() == 'gpu'
  bias = jnp.broadcast_to(attn_bias, (q.shape[0], 1, q.shape[1], k.shape[1]))
  return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype) if on_gpu else bias,
                                      implementation='cudnn' if on_gpu else None)


class Layer(nn.Module):
  """One post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

  arch: Arch
  dtype: jnp.dtype
  dropout_rate: float
  deterministic: bool
  attention: str = 'matmul'  # one of ATTENTIONS.

  @nn.compact
  def __call__(self, x, attn_bias, rows):
    a = self.arch
    batch, length, _ = x.shape
    head_dim = a.hidden // a.heads
    drop = lambda y: Dropout(self.dropout_rate)(y, rows, self.deterministic)

    def heads(name):  # [B, L, H*D] -> [B, L, H, D]
      y = Dense(a.hidden, ('embed', 'heads'), self.dtype, name=name)(x)
      return y.reshape(batch, length, a.heads, head_dim).astype(self.dtype)

    q, k, v = heads('query'), heads('key'), heads('value')
    if self.attention == 'fused' and (self.deterministic or self.dropout_rate == 0.0):
      ctx = fused_attention(q, k, v, attn_bias).reshape(batch, length, a.hidden)
    else:  # [B, L, H, D] -> [B*H, L, D]
      q, k, v = (y.transpose(0, 2, 1, 3).reshape(batch * a.heads, length, head_dim)
                 for y in (q, k, v))
      logits = batched_matmul(q, k.transpose(0, 2, 1)).reshape(batch, a.heads, length, length)
      logits = logits / jnp.sqrt(jnp.float32(head_dim)) + attn_bias
      probs = drop(jax.nn.softmax(logits, axis=-1)).astype(self.dtype)
      ctx = batched_matmul(probs.reshape(batch * a.heads, length, length), v)
      ctx = ctx.reshape(batch, a.heads, length, head_dim).transpose(0, 2, 1, 3).reshape(
          batch, length, a.hidden)
    ctx = _constrain(ctx, ('batch', 'length', 'heads'))
    attn = Dense(a.hidden, ('heads', 'embed'), self.dtype, name='out')(ctx)
    x = LayerNorm(a.layer_norm_eps, name='attn_ln')(x + drop(attn))

    h = Dense(a.mlp, ('embed', 'mlp'), self.dtype, name='mlp_in')(x)
    h = _constrain(h, ('batch', 'length', 'mlp'))
    h = Dense(a.hidden, ('mlp', 'embed'), self.dtype, name='mlp_out')(
        jax.nn.gelu(h, approximate=False))
    x = LayerNorm(a.layer_norm_eps, name='mlp_ln')(x + drop(h))
    return _constrain(x, ('batch', 'length', 'act_embed')), None


class Encoder(nn.Module):
  """Token ids [B, L] and mask [B, L] -> L2-normalised sentence embeddings [B, hidden].

  `rows` [B] (default 0..B-1) names each example for dropout: its masks depend only on the
  dropout rng and its row id (see `Dropout`).
  """

  arch: Arch
  pooling: str = 'mean'  # one of POOLINGS.
  dtype: jnp.dtype = jnp.float32
  dropout_rate: float = 0.0
  remat: bool = False  # recompute layer activations in the backward pass to save memory.
  # Layers per step of the layer loop; 0: all of them (straight-line code, fastest) without remat,
  # 1 with remat (each layer is then recomputed inside the backward loop; unrolled, XLA may hoist
  # every recomputation into the forward pass and save nothing).
  scan_unroll: int = 0
  attention: str = 'matmul'  # one of ATTENTIONS.

  @nn.compact
  def __call__(self, ids, mask, deterministic: bool = True, rows=None,
               num_texts: int | None = None):
    """Embeddings [B, hidden]; packed rows (`num_texts` given): [num_texts, hidden].

    Args:
      ids: token ids [B, L].
      mask: [B, L], 1 on tokens and 0 on padding; with `num_texts`, the text id of each token
        (i + 1 for text i of the output, 0 on padding), texts lying in contiguous runs.
      deterministic: no dropout.
      rows: [B] global row numbers (dropout masks; see above); default 0..B-1.
      num_texts: how many texts the packed rows hold (None: one text per row).
    """
    a = self.arch
    rows = jnp.arange(ids.shape[0]) if rows is None else rows
    init = nn.initializers.normal(0.02)
    word = _param(self, 'word_embeddings', init, (a.vocab_size, a.hidden), ('vocab', 'embed'))
    position = _param(self, 'position_embeddings', init, (a.max_positions, a.hidden),
                      ('positions', 'embed'))
    token_type = _param(self, 'token_type_embeddings', init, (a.type_vocab_size, a.hidden),
                        (None, 'embed'))
    if num_texts is None:
      if ids.shape[1] + a.position_offset > a.max_positions:  # jnp.take would give NaN there
        raise ValueError(f'rows of {ids.shape[1]} tokens need {ids.shape[1] + a.position_offset} '
                         f'positions; the model has {a.max_positions} (max_positions)')
      positions = (jnp.arange(ids.shape[1]) + a.position_offset)[None]
      attn_bias = jnp.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)
    else:
      positions = segment_positions(mask) + a.position_offset
      same = (mask[:, :, None] == mask[:, None, :]) & (mask[:, None, :] > 0)
      attn_bias = jnp.where(same[:, None], 0.0, -1e9).astype(jnp.float32)
    x = jnp.take(word, ids, axis=0) + jnp.take(position, positions, axis=0) + token_type[0]
    x = LayerNorm(a.layer_norm_eps, name='embeddings_ln')(x)
    x = Dropout(self.dropout_rate)(x, rows, deterministic)
    x = _constrain(x, ('batch', 'length', 'act_embed'))

    layer = nn.remat(Layer, static_argnums=()) if self.remat else Layer
    stack = nn.scan(layer, variable_axes={'params': 0}, split_rngs={'params': True,
                                                                    'dropout': True},
                    in_axes=nn.broadcast, length=a.layers,
                    metadata_params={nn.PARTITION_NAME: 'layers'},
                    unroll=self.scan_unroll or (1 if self.remat else a.layers))
    if self.attention not in ATTENTIONS:
      raise ValueError(f'attention must be one of {ATTENTIONS}, got {self.attention!r}')
    x, _ = stack(a, self.dtype, self.dropout_rate, deterministic, self.attention,
                 name='layers')(x, attn_bias, rows)

    if num_texts is None:
      first = x[:, 0]
      if self.pooling == 'mean':
        m = mask[..., None].astype(jnp.float32)
        mean = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    else:  # one-hot [B, L, T] of each token's text: sums over the tokens of every text
      onehot = (mask[..., None] == jnp.arange(1, num_texts + 1)).astype(jnp.float32)
      if self.pooling == 'mean':
        mean = (jnp.einsum('blt,bld->td', onehot, x, precision='highest')
                / jnp.maximum(onehot.sum((0, 1)), 1.0)[:, None])
      else:
        starts = onehot * (positions == a.position_offset)[..., None]
        first = jnp.einsum('blt,bld->td', starts, x, precision='highest')
    if self.pooling == 'mean':
      pooled = mean
    elif self.pooling == 'cls':
      pooled = first
    elif self.pooling == 'cls_pooler':
      pooled = jnp.tanh(Dense(a.hidden, ('embed', None), self.dtype, name='pooler')(first))
    else:
      raise ValueError(f'pooling must be one of {POOLINGS}, got {self.pooling!r}')
    norm = jnp.sqrt(jnp.sum(jnp.square(pooled), -1, keepdims=True))
    return pooled / jnp.maximum(norm, 1e-12)


def segment_positions(segments: jax.Array) -> jax.Array:
  """Each token's index within its run of equal segment ids: [B, L] int32, 0 at each run start."""
  index = jnp.arange(segments.shape[1], dtype=jnp.int32)
  starts = jnp.concatenate([jnp.ones_like(segments[:, :1], bool),
                            segments[:, 1:] != segments[:, :-1]], axis=1)
  return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
