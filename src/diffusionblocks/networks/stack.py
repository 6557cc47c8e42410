"""Your own residual network, block-wise: the user's stem, residual layers and head, with what
DiffusionBlocks adds around them (``docs/your-model.md``).

A user describes the network with :class:`ResidualStack`: a ``stem`` (input -> tokens (N, T, C)
or a vector (N, C), optionally with a condition vector (N, C) as a second output), residual
``layers`` that keep that shape, and a ``head`` (a vector (N, C) -> logits (N, K) or the target's
values; ``forward(x, cond)`` is given the condition). :class:`StackNetwork` adds (it is a
:class:`~diffusionblocks.networks.layers.SlotNetwork`, as the built-in ViT, and trains by the same
code, ``tasks/slot.py``):

- sigma conditioning: every plain layer is wrapped in :class:`SigmaConditioned` (adaLN-Zero: a
  shift and scale of its input and a gate on its residual, all from the noise level's embedding
  and zero-initialised, so a wrapped layer starts as exactly the layer it wraps); a layer whose
  ``forward(x, cond)`` takes the condition itself is used as it is;
- the entry of the noisy target: a label embedding table (class targets: the unit-norm rows are
  the clean targets, as the paper's classification) or a linear map of the target's values
  (continuous targets), in a slot token put before the stem's tokens (or added to the stem's
  vector);
- the blocks: the layers grouped into B blocks (equal, or ``layers_per_block``), each built from
  its own seed so that it can be built alone (block-resident training).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..config import ConfigError
from .layers import (
    LayerGroup,
    ScalarEmbedding,
    SlotNetwork,
    TokenNetwork,
    _per_token,
    _zero_linear,
    evaluating,
    modulate,
    two_stream_mask,
)

TARGETS = ("classes", "continuous", "tokens")


def load_function(reference: str, key: str) -> Callable[..., Any]:
    """The function ``reference`` names: ``FILE.py:NAME`` (the file imported as a module, once)
    or ``package.module:NAME``; a failure is one sentence naming the config ``key``."""
    where, _, name = reference.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            if not path.is_file():
                raise ConfigError(f"invalid value for '{key}': {reference} ({path} does not "
                                  "exist; give the file that defines your network)")  # fmt: skip
            # the file's content in the name: the same path with new code is imported afresh
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            module_name = f"diffusionblocks_user_{abs(hash(str(path.resolve())))}_{digest}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]  # a fixed file is imported afresh next time
                    raise
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"invalid value for '{key}': {reference} (importing {where} failed: "
                          f"{type(err).__name__}: {err})") from err  # fmt: skip
    target: Any = module
    for part in name.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ConfigError(f"invalid value for '{key}': {reference} ({where} has no function "
                          f"{name!r})")  # fmt: skip
    return target


@dataclass
class ResidualStack:
    """A residual network for DiffusionBlocks: ``stem``, ``layers``, ``head`` and its ``target``.

    ``layers``: the residual layers, each mapping x (N, C) or (N, T, C) to the same shape with
    ``forward(x)`` (the library adds sigma conditioning) or ``forward(x, cond)`` (cond: (N, C),
    used as it is); either a list of modules or a function ``layer(i)`` of the layer's index
    with ``depth`` layers (then block-resident training builds only the block it trains, where a
    list is held whole). ``head``: ``forward(x)``, or ``forward(x, cond)`` to be given the
    condition. ``target``: "classes" (integer labels; the head gives (N, K) logits),
    "continuous" (numbers; the head gives (N, *target_shape) values), or "tokens" (a language
    model, ``model=`` of the masked-diffusion and autoregressive presets: the stem embeds token
    ids (N, T) -> (N, T, C), the head gives (N, T, V) logits; :class:`TokenStackNetwork`,
    :class:`TwoStreamStackNetwork`)."""

    stem: nn.Module
    layers: Sequence[nn.Module] | Callable[[int], nn.Module]
    head: nn.Module
    target: str = "classes"
    depth: int | None = None  # with ``layers`` a function: how many layers

    def __post_init__(self) -> None:
        for name in ("stem", "head"):
            if not isinstance(getattr(self, name), nn.Module):
                raise ConfigError(f"the stack's {name} must be a torch.nn.Module, got "
                                  f"{type(getattr(self, name)).__name__}")  # fmt: skip
        if self.target not in TARGETS:
            raise ConfigError(f"the stack's target must be one of {', '.join(TARGETS)}, got "
                              f"{self.target!r}")  # fmt: skip
        if self.by_function:
            if not isinstance(self.depth, int) or self.depth < 1:
                raise ConfigError("a stack whose layers are a function layer(i) needs depth, "
                                  "the number of layers (an integer >= 1)")  # fmt: skip
            return
        layers = list(self.layers)  # type: ignore[arg-type]
        self.layers = layers  # a generator is read once: keep the list
        if not layers:
            raise ConfigError("the stack has no layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Module):
                raise ConfigError(f"layer {i} of the stack is a {type(layer).__name__}, not a "
                                  "torch.nn.Module")  # fmt: skip
            takes_condition(layer, i)
        if self.depth is not None and self.depth != len(layers):
            raise ConfigError(f"the stack's depth is {self.depth} but it has {len(layers)} layers")
        self.depth = len(layers)

    @property
    def by_function(self) -> bool:
        """Whether ``layers`` is a function ``layer(i)`` (else a list of modules)."""
        return callable(self.layers) and not isinstance(self.layers, nn.Module)

    def layer(self, index: int) -> nn.Module:
        """A new layer ``index``: a copy of the given one, or ``layers(index)``."""
        if self.by_function:
            layer = self.layers(index)  # type: ignore[operator]
            if not isinstance(layer, nn.Module):
                raise ConfigError(f"layers({index}) returned a {type(layer).__name__}, not a "
                                  "torch.nn.Module")  # fmt: skip
            return layer
        layer = copy.deepcopy(self.layers[index])  # type: ignore[index]
        if torch.get_default_device().type == "meta":  # a block built without storage
            layer = layer.to("meta")
        return layer


def _forward_parameters(layer: nn.Module) -> list[inspect.Parameter] | None:
    """The parameters of ``layer.forward`` (None when it has no readable signature)."""
    try:
        return list(inspect.signature(layer.forward).parameters.values())
    except (TypeError, ValueError):
        return None


def takes_condition(layer: nn.Module, index: int) -> bool:
    """Whether ``layer`` takes the condition (``forward(x, cond)``: a second required argument,
    or a second argument named ``cond``) or not (``forward(x)``, other arguments optional);
    ``mask`` and ``positions``, passed by keyword when a network has them, must be optional.
    Any other signature is refused, naming the layer."""
    params = _forward_parameters(layer)
    if params is None:  # a builtin without a signature: try it as forward(x)
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    keyword = [p.name for p in params if p.name in ("mask", "positions") and p.default is p.empty]
    order = [p.name for p in positional]
    if keyword or ("cond" in order and order.index("cond") != 1):
        raise ConfigError(
            f"layer {index} ({type(layer).__name__}) must take x, then cond if it takes the "
            "condition, then mask and positions as optional keywords, e.g. forward(x, cond, "
            "mask=None)"
        )
    if len(positional) >= 2 and positional[1].name == "cond" and len(required) <= 2:
        return True  # forward(x, cond) or forward(x, cond=None): it takes the condition
    if len(required) == 1 or (not required and positional):
        return False
    if len(required) == 2:
        return True
    names = ", ".join(p.name for p in positional) or "nothing"
    raise ConfigError(
        f"layer {index} of the stack ({type(layer).__name__}) must take forward(x) or "
        f"forward(x, cond), but its forward takes ({names})"
    )


class SigmaConditioned(nn.Module):
    """A user's layer with adaLN-Zero sigma conditioning: ``h = x * (1 + scale) + shift`` goes
    into the layer, and its residual ``layer(h) - h`` comes back gated by ``1 + gate``; shift,
    scale and gate come from the condition through a zero-initialised projection, so at
    initialisation the output is exactly ``layer(x)`` (bitwise). A layer that takes the
    condition itself (``forward(x, cond)``) is called as it is."""

    def __init__(self, layer: nn.Module, dim: int, index: int):
        super().__init__()
        self.layer = layer
        self.index = index
        self.own_condition = takes_condition(layer, index)
        # keyword arguments the layer takes: an attention mask, the positions of its inputs
        self.takes = {p.name for p in _forward_parameters(layer) or []} & {"mask", "positions"}
        if not self.own_condition:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
            _zero_linear(self.modulation[1])

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mask`` (L, L) bool, True where attention is allowed, and ``positions`` (L,) go to
        the layer by keyword if its ``forward`` takes them by those names; a mask it cannot
        take is refused (the network needs it: causal or two-stream attention). The token
        networks always pass ``positions``."""
        extra: dict[str, torch.Tensor] = {}
        if mask is not None:
            if "mask" not in self.takes:
                raise ConfigError(
                    f"layer {self.index} ({type(self.layer).__name__}) takes no attention mask, "
                    "and this network passes one: give its forward a mask=None argument (a "
                    "(L, L) bool tensor, True where attention is allowed)"
                )
            extra["mask"] = mask
        if positions is not None and "positions" in self.takes:
            extra["positions"] = positions
        if self.own_condition:
            out = self.layer(x, cond, **extra)
        else:
            mod = self.modulation(cond)
            shift, scale, gate = (_per_token(mod) if x.dim() == 3 else mod).chunk(3, dim=-1)
            h = modulate(x, shift, scale)
            branch = self.layer(h, **extra)
            if isinstance(branch, torch.Tensor) and branch.shape == x.shape:
                # = x + (1 + gate) * (branch - h), written so that at gate = shift = scale = 0
                # it is branch itself, bitwise
                return branch + (x - h) + gate * (branch - h)
            out = branch
        return self.checked(out, x, self.layer, self.index)

    @staticmethod
    def checked(out: Any, x: torch.Tensor, layer: nn.Module, index: int) -> torch.Tensor:
        """``out`` when it is a tensor shaped like ``x``; otherwise the layer is named."""
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"layer {index} of the stack ({type(layer).__name__}) maps an input of shape "
                f"{tuple(x.shape)} to {got}: a residual layer must keep its input's shape"
            )
        return out


def head_takes_condition(head: nn.Module) -> bool:
    """Whether the stack's ``head`` takes the condition: ``forward(x, cond)`` (a second
    required argument, or one named ``cond``); ``forward(x)`` otherwise."""
    params = _forward_parameters(head)
    if params is None:
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(positional) >= 2 and (positional[1].name == "cond" or len(required) >= 2)


def check_network_keys(config: Any) -> None:
    """A language model config's ``layer``: empty (the built-in layer), a layer of
    ``transformers`` (``hf:llama``), or ``FILE.py:NAME`` / ``package.module:NAME``; and its
    ``model`` (your whole network): empty or ``FILE.py:NAME``, without ``layer`` or
    ``pretrained`` beside it. Each refused naming the key."""
    from .hf import HF_LAYERS

    value = config.layer
    user = ":" in value and not value.startswith("hf:")
    if not (value in ("", *HF_LAYERS) or user):
        raise ConfigError(
            f"invalid value for 'layer': {value!r} (must be empty for the built-in layer, "
            f"{' or '.join(HF_LAYERS)}, or FILE.py:NAME)"
        )
    model = config.model
    if model and ":" not in model:
        raise ConfigError(f"invalid value for 'model': {model!r} (FILE.py:NAME or "
                          "package.module:NAME, a function returning a ResidualStack)")  # fmt: skip
    if model and value:
        raise ConfigError(f"invalid value for 'layer': {value!r} (empty with model=: your "
                          "network brings its own layers)")  # fmt: skip
    if model and getattr(config, "pretrained", ""):
        raise ConfigError(f"invalid value for 'pretrained': {config.pretrained!r} (empty with "
                          "model=: your network is the model)")  # fmt: skip


def conditioned_layers(
    reference: str,
    hidden: int,
    heads: int,
    mlp_ratio: float,
    max_len: int,
    causal: bool,
    build: Callable[[int], nn.Module] | None = None,
) -> Callable[[int], nn.Module]:
    """``layer(index)`` for a built-in network's blocks from the config's ``layer``: a layer of
    ``transformers`` (``hf:llama``) or the user's ``FILE.py:NAME``, a function ``NAME(index,
    hidden, heads, mlp_ratio)`` returning a residual layer on (N, T, hidden); or ``build``'s
    layers (a pretrained model's); each wrapped with sigma conditioning
    (:class:`SigmaConditioned`)."""
    if build is not None:
        reference = reference or "the pretrained model"
    elif reference.startswith("hf:"):
        from .hf import hf_layer

        build = hf_layer(reference, hidden, heads, mlp_ratio, max_len, causal)
    else:
        function = load_function(reference, "layer")
        try:
            inspect.signature(function).bind(0, hidden, heads, mlp_ratio)
        except TypeError:
            raise ConfigError(
                f"invalid value for 'layer': {reference} (the function must take (index, "
                "hidden, heads, mlp_ratio) and return one residual layer)"
            ) from None
        except ValueError:  # no signature to read: it is called as it is
            pass

        def build(index: int) -> nn.Module:
            return function(index, hidden, heads, mlp_ratio)

    def make(index: int) -> nn.Module:
        layer = build(index)
        if not isinstance(layer, nn.Module):
            raise ConfigError(f"invalid value for 'layer': {reference} returned a "
                              f"{type(layer).__name__}, not a torch.nn.Module")  # fmt: skip
        return SigmaConditioned(layer, hidden, index)

    return make


@dataclass(frozen=True)
class StackShape:
    """What a :class:`StackNetwork` is built for (from the data and the config)."""

    num_classes: int  # classes (target "classes"), 0 for continuous targets
    target_size: int  # numbers per target (continuous), 0 for classes
    depth: int  # layers built (end to end at depth L/B: the first L/B of the stack's)
    num_blocks: int
    layers_per_block: tuple[int, ...] | None = None  # None: equal blocks
    seed: int = 0


class StackNetwork(SlotNetwork):
    """The user's stem and head (shared by every block), the sigma embedder, the target's entry
    (a label table, or a linear map of continuous values) and a slot token (token stems), and
    ``blocks[b]``: the user's layers of block b, sigma-conditioned. A head whose ``forward(x,
    cond)`` takes the condition is given it (as the built-in ViT's adaLN head)."""

    def __init__(
        self,
        stack: ResidualStack,
        shape: StackShape,
        example: torch.Tensor,
        materialize_blocks: bool = True,
    ):
        super().__init__()
        self.stack_shape = shape
        self.stem = stack.stem
        self.head = stack.head
        self.head_takes_condition = head_takes_condition(stack.head)
        with torch.no_grad(), evaluating(self.stem):  # a check: no running statistics move
            tokens, extra = self._stem_outputs(self.stem(example))
        self.token_stem = tokens.dim() == 3
        # positions the layers see per example: the tokens and the slot, or one vector
        self.positions = 1 + int(tokens.shape[1]) if self.token_stem else 1
        self.hidden = hidden = int(tokens.shape[-1])
        self.cond_embed = ScalarEmbedding(hidden)
        if shape.num_classes:
            self.label_embed = nn.Embedding(shape.num_classes, hidden)
            nn.init.normal_(self.label_embed.weight, std=1.0)
        else:
            self.target_in = nn.Linear(shape.target_size, hidden)
        if self.token_stem:
            self.slot = nn.Parameter(torch.zeros(1, hidden))
            nn.init.trunc_normal_(self.slot, std=0.02)
        self._init_blocks(
            shape.depth,
            shape.num_blocks,
            lambda i: SigmaConditioned(stack.layer(i), hidden, i),
            shape.seed,
            materialize_blocks,
            shape.layers_per_block,
        )
        self._check_layers(stack, tokens, extra)
        self._check_head(example)

    def _check_layers(
        self, stack: ResidualStack, tokens: torch.Tensor, extra: torch.Tensor | None
    ) -> None:
        """Run the example through the given layers (a list) or the blocks in memory, so that a
        layer that changes the shape is named now, not at the first training step."""
        x = self.enter(tokens, torch.zeros(len(tokens), self.hidden))
        cond = torch.zeros(len(tokens), self.hidden) if extra is None else extra
        given = stack.layers
        with torch.no_grad():
            if not stack.by_function:
                for i, layer in enumerate(given):  # type: ignore[arg-type]
                    with evaluating(layer):
                        out = layer(x, cond) if takes_condition(layer, i) else layer(x)
                    x = SigmaConditioned.checked(out, x, layer, i)
            else:
                for group in self.blocks:
                    if not any(p.is_meta for p in group.parameters()):
                        with evaluating(group):
                            x = group(x, cond)

    def _stem_outputs(self, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stem's tokens (N, T, C) or vector (N, C), and its condition (N, C) or None."""
        extra = None
        if isinstance(out, (tuple, list)) and len(out) == 2:
            out, extra = out
        if not isinstance(out, torch.Tensor) or out.dim() not in (2, 3):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"the stack's stem returned {got}: it must return tokens (N, T, C) or a vector "
                "(N, C), optionally with a condition (N, C) as a second output"
            )
        if extra is not None and (
            not isinstance(extra, torch.Tensor) or tuple(extra.shape) != (len(out), out.shape[-1])
        ):
            got = tuple(extra.shape) if isinstance(extra, torch.Tensor) else type(extra).__name__
            raise ConfigError(f"the stack's stem returned a condition of shape {got}; it must be "
                              f"(N, C) = ({len(out)}, {out.shape[-1]})")  # fmt: skip
        return out, extra

    def _check_head(self, example: torch.Tensor) -> None:
        s = self.stack_shape
        want = s.num_classes or s.target_size
        with torch.no_grad(), evaluating(self.head):
            zeros = torch.zeros(len(example), self.hidden, device=example.device)
            out = self.head(zeros, zeros) if self.head_takes_condition else self.head(zeros)
        if not isinstance(out, torch.Tensor) or out.flatten(1).shape[1:] != (want,):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            what = f"{want} logits" if s.num_classes else f"the target's {want} values"
            raise ConfigError(
                f"the stack's head maps (N, {self.hidden}) to {got}, but this data needs "
                f"{what} per example"
            )

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stem on ``inputs``: tokens or vector, and its condition (or None)."""
        return self._stem_outputs(self.stem(inputs))

    def slot_embedding(self) -> torch.Tensor:
        """The slot token's learned embedding (1, C)."""
        return self.slot

    def target_entry(self, scaled: torch.Tensor) -> torch.Tensor:
        """A label embedding as it is; continuous values through a linear map to (N, C)."""
        return scaled if self.stack_shape.num_classes else self.target_in(scaled)

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The user's head on (N, C), given the condition if it takes it: (N, K) or (N, D)."""
        out = self.head(x, cond) if self.head_takes_condition else self.head(x)
        return out.flatten(1)


STACK_PARAMETERS = ("vocab_size", "depth", "hidden", "heads", "seq_len")


def load_token_stack(reference: str, values: dict[str, int]) -> ResidualStack:
    """A language model's ``model``: call the function ``reference`` names with the values of
    :data:`STACK_PARAMETERS` its signature names (all of them to ``**kwargs``; ``vocab_size``:
    the characters or tokens V; ids run 0..V, V being the mask token, in the masked-diffusion
    LM, 0..V-1 in the autoregressive one), and check
    it returns a ``ResidualStack(target="tokens")``; every failure is one sentence naming
    ``model``."""
    function = load_function(reference, "model")
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # no signature to read: called with nothing
        params = []
    if any(p.kind == p.VAR_KEYWORD for p in params):
        given = dict(values)
    else:
        given = {p.name: values[p.name] for p in params if p.name in values}
    unknown = [p.name for p in params if p.name not in values and p.default is p.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    if unknown:
        raise ConfigError(
            f"invalid value for 'model': {reference} needs {', '.join(unknown)}; a token stack's "
            f"function is given (by name) any of {', '.join(STACK_PARAMETERS)}"
        )
    try:
        stack = function(**given)
    except ConfigError as err:  # the ResidualStack's own checks
        raise ConfigError(f"invalid value for 'model': {reference}: {err}") from None
    if not isinstance(stack, ResidualStack) or stack.target != "tokens":
        got = (f"a ResidualStack with target={stack.target!r}" if isinstance(stack, ResidualStack)
               else f"a {type(stack).__name__}")  # fmt: skip
        raise ConfigError(
            f"invalid value for 'model': {reference} returned {got}; a language model (the "
            "masked-diffusion and autoregressive presets) needs a diffusionblocks.ResidualStack "
            "with target='tokens'"
        )
    return stack


def token_stack_network(kind: type[TokenStackNetwork], config: Any, vocab_size: int) -> Any:
    """A language model's network of ``model=`` (``kind``: :class:`TokenStackNetwork` for the
    masked-diffusion LM, :class:`TwoStreamStackNetwork` for the autoregressive one) from the
    run's ``config`` and the vocabulary's size V; a stack with another depth than the config's
    is refused, naming ``depth``."""
    values = {"vocab_size": vocab_size, "depth": config.depth, "hidden": config.hidden,
              "heads": config.heads, "seq_len": config.seq_len}  # fmt: skip
    stack = load_token_stack(config.model, values)
    if stack.depth != config.depth:
        raise ConfigError(
            f"invalid value for 'depth': {config.depth} (your stack {config.model} has "
            f"{stack.depth} layers; set depth={stack.depth}, or build depth layers)"
        )
    return kind(stack, vocab_size, config.seq_len, config.model_depth, config.num_model_blocks,
                config.seed, config.block_sizes, not config.block_resident)  # fmt: skip


class TokenStackNetwork(TokenNetwork):
    """A user's token network (``ResidualStack(target="tokens")``) with the interface of the
    built-in :class:`~diffusionblocks.networks.token_transformer.TokenTransformer`, so that the
    masked-diffusion LM trains, evaluates and samples it unchanged: the user's stem (ids (N, T)
    -> (N, T, C) for any T up to ``seq_len``; ids 0..V, V the mask token) and head ((N, T, C) ->
    (N, T, V) logits) are shared by every block; a sigma (masking-time) embedder is added;
    ``blocks[b]``: the user's layers of block b, each sigma-conditioned
    (:class:`SigmaConditioned`, zero-initialised: at initialisation the network is exactly the
    user's). Built, the stem, layers and head are run once on all-masked sequences of
    ``seq_len`` and of half of it (the largest id where there is no mask token), so that a wrong
    shape is refused now, naming ``model``."""

    mask_token = True  # ids 0..V, V the mask token (the masked-diffusion LM)

    def __init__(
        self,
        stack: ResidualStack,
        vocab_size: int,
        seq_len: int,
        depth: int,
        num_blocks: int,
        seed: int,
        layers_per_block: tuple[int, ...] | None = None,
        materialize_blocks: bool = True,
    ):
        super().__init__()
        self.stem = stack.stem
        self.head = stack.head
        self.vocab_size = vocab_size
        tokens = self._check_stem(seq_len)
        self.hidden = hidden = int(tokens.shape[-1])
        self.positions = seq_len
        self.cond_embed = ScalarEmbedding(hidden)
        self._init_blocks(
            depth,
            num_blocks,
            lambda i: SigmaConditioned(stack.layer(i), hidden, i),
            seed,
            materialize_blocks,
            layers_per_block,
        )
        for length in sorted({seq_len, max(1, seq_len // 2)}):  # generation feeds shorter ones
            x = self._check_stem(length)
            self._check_head(self._check_layers(stack, x, depth), length)

    def _user(self, what: str, run: Callable[[], Any]) -> Any:
        """``run()`` (a call of the user's stem, layers or head on an example), any failure
        refused in one sentence naming ``model``."""
        try:
            with torch.no_grad():
                return run()
        except ConfigError:
            raise
        except Exception as err:
            raise ConfigError(f"invalid value for 'model': the stack's {what} failed on an "
                              f"example ({type(err).__name__}: {err})") from None  # fmt: skip

    def _check_stem(self, length: int) -> torch.Tensor:
        """The stem's output for two sequences of ``length`` (all masked, or all the largest id
        without a mask token); refused unless it is (2, length, C)."""
        v = self.vocab_size
        if self.mask_token:  # all masked
            example = torch.full((2, length), v, dtype=torch.long)
            what = f"stem (ids 0..{v}, {v} the mask token: an embedding needs {v + 1} rows)"
        else:  # the largest id
            example = torch.full((2, length), v - 1, dtype=torch.long)
            what = f"stem (ids 0..{v - 1}: an embedding needs {v} rows)"
        with evaluating(self.stem):
            tokens = self._user(what, lambda: self.stem(example))
        if (
            not isinstance(tokens, torch.Tensor)
            or tokens.dim() != 3
            or (tuple(tokens.shape[:2]) != (2, length))
        ):
            got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ConfigError(
                f"invalid value for 'model': the stack's stem maps token ids (2, {length}) to "
                f"{got}; a token stack's stem must return (N, T, C) for any T up to seq_len"
            )
        return tokens

    def _check_layers(self, stack: ResidualStack, x: torch.Tensor, depth: int) -> torch.Tensor:
        """``x`` through the given layers (a list: the first ``depth``) or the blocks in memory
        (a function), each checked to keep the shape."""
        cond = torch.zeros(len(x), self.hidden)
        if not stack.by_function:
            for i, layer in enumerate(list(stack.layers)[:depth]):  # type: ignore[arg-type]
                own = takes_condition(layer, i)
                with evaluating(layer):
                    call = partial(layer, x, cond) if own else partial(layer, x)
                    out = self._user(f"layer {i}", call)
                x = SigmaConditioned.checked(out, x, layer, i)
            return x
        for b, group in enumerate(self.blocks):
            if not any(p.is_meta for p in group.parameters()):
                with evaluating(group):
                    x = self._user(f"block {b}", partial(group, x, cond))
        return x

    def _check_head(self, x: torch.Tensor, length: int) -> None:
        with evaluating(self.head):
            out = self._user("head", lambda: self.head(x))
        want = (2, length, self.vocab_size)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"invalid value for 'model': the stack's head maps (2, {length}, {self.hidden}) "
                f"to {got}; it must give (N, T, {self.vocab_size}) logits, one per character or "
                "token"
            )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N, T) -> (N, T, C): the user's stem."""
        return self.stem(ids)

    def output(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The user's head (it does not take the condition)."""
        return self.head(x)


class TwoStreamStackNetwork(TokenStackNetwork):
    """A user's token network for the autoregressive model (``model=`` of the AR presets), with
    the interface of the built-in
    :class:`~diffusionblocks.networks.token_transformer.TwoStreamTransformer`: the clean stream
    is the user's stem on ids 0..V-1 (no mask token); the library adds the noisy stream's entry
    (the noisy target vectors plus a learned position embedding, as the built-in's), a learned
    offset per stream (zero-initialised: the clean stream starts as the user's network), the
    clean tokens' learned condition, and ``token_embed``, the table whose unit-norm rows are the
    clean targets (the built-in reads them from its input embedding; a user's stem is opaque).
    Every layer must take ``mask=`` (causal and two-stream attention); ``positions=`` (each
    token's index, both streams 0..T-1) goes to layers that take it (rotary embeddings)."""

    mask_token = False

    def __init__(self, stack: ResidualStack, vocab_size: int, seq_len: int, *args: Any,
                 **kwargs: Any):  # fmt: skip
        """As :class:`TokenStackNetwork`'s."""
        super().__init__(stack, vocab_size, seq_len, *args, **kwargs)
        for group in self.blocks:
            for wrapped in cast(list[SigmaConditioned], list(cast(LayerGroup, group).layers)):
                if "mask" not in wrapped.takes:
                    raise ConfigError(
                        f"invalid value for 'model': layer {wrapped.index} of the stack "
                        f"({type(wrapped.layer).__name__}) takes no attention mask; the "
                        "autoregressive model needs one (causal and two-stream attention): "
                        "give its forward a mask=None argument, a (L, L) bool tensor, True "
                        "where attention is allowed"
                    )
        self._check_two_streams(stack, seq_len)
        hidden = self.hidden
        self.token_embed = nn.Embedding(vocab_size, hidden)  # the targets' table
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.noisy_pos = nn.Parameter(torch.zeros(1, seq_len, hidden))
        nn.init.trunc_normal_(self.noisy_pos, std=0.02)
        self.stream_embed = nn.Parameter(torch.zeros(2, hidden))
        self.clean_cond = nn.Parameter(torch.zeros(hidden))

    def _check_two_streams(self, stack: ResidualStack, seq_len: int) -> None:
        """Run the layers (the blocks in memory, else the given list) on what training feeds
        them, 2 x seq_len tokens with the two-stream mask and the positions, and refuse (naming
        ``model``) layers that fail there or that do not keep to the mask: changing the last
        clean token or the first noisy one must change no output that may not see it (a layer
        with its own causal mask would let noisy token i see clean token i, its target)."""
        t = seq_len
        gen = torch.Generator().manual_seed(0)  # no draw of the global generator
        x = torch.randn(2, 2 * t, self.hidden, generator=gen)
        cond = torch.randn(2, 2 * t, self.hidden, generator=gen)
        mask, positions = two_stream_mask(t), torch.arange(t).repeat(2)
        groups = [g for g in self.blocks if not any(p.is_meta for p in g.parameters())]

        def run(inputs: torch.Tensor) -> torch.Tensor:
            if groups:
                for group in groups:
                    with evaluating(group):
                        inputs = group(inputs, cond, mask, positions)
                return inputs
            for i, layer in enumerate(list(stack.layers)):  # type: ignore[arg-type]
                extra = {k: v for k, v in (("mask", mask), ("positions", positions))
                         if k in {p.name for p in _forward_parameters(layer) or []}}  # fmt: skip
                with evaluating(layer):
                    own = takes_condition(layer, i)
                    inputs = layer(inputs, cond[:, 0], **extra) if own else layer(inputs, **extra)
            return inputs

        if not groups and stack.by_function:
            return  # block-resident with a layer function: nothing built to check
        out = self._user("layers on the two streams (2 x seq_len tokens, the two-stream mask)",
                         lambda: run(x))  # fmt: skip
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"invalid value for 'model': the stack's layers map the two streams "
                f"{tuple(x.shape)} to {got}; the autoregressive model feeds them 2 x seq_len "
                "tokens"
            )
        for changed, unseen in (
            (t - 1, [*range(t - 1), *range(t, 2 * t)]),  # last clean
            (t, [*range(t), *range(t + 1, 2 * t)]),
        ):  # first noisy
            y = x.clone()
            y[:, changed] += 1.0
            other = self._user("layers on the two streams", partial(run, y))
            if not torch.allclose(out[:, unseen], other[:, unseen], rtol=0, atol=1e-5):
                raise ConfigError(
                    "invalid value for 'model': the stack's layers do not keep to the attention "
                    "mask they are given (changing one token changed outputs that may not see "
                    "it): use mask (True where attention is allowed) in place of any mask of "
                    "the layer's own"
                )

    def clean_inputs(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The user's stem on ids (N, T) plus the clean stream's offset (N, T, C); positions
        are the stem's own (``start`` unused: the clean stream always starts at 0)."""
        return self.stem(ids) + self.stream_embed[0]

    def noisy_inputs(self, vectors: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Noisy vectors (N, T, C) (scaled by the task) for positions start.. start+T-1."""
        t = vectors.shape[1]
        return vectors + self.noisy_pos[:, start : start + t] + self.stream_embed[1]

    def clean_condition(self, n: int, t: int) -> torch.Tensor:
        return self.clean_cond.expand(n, t, -1)
