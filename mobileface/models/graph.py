"""Graph surgery on ONNX models before onnxruntime sees them.

:func:`fold_conv_affine` folds a per-channel ``Mul``, ``Add``, ``Sub`` or ``Div``
by a constant that follows a ``Conv`` into the convolution's weights and bias.
Cydral's age and gender nets (dlib's ``affine`` layers, batch norm of the
training graph) are exported that way: the age net is 11 Conv + 11 Mul + 16 Add,
of which 11 Mul and 11 Add fold away. The pass is general: it folds whatever
it finds in any model, and leaves a node alone unless it is safe:

* the constant is an initializer of type float, shaped ``(1, C, 1, 1)``,
  ``(C, 1, 1)``, ``(1, 1, 1, 1)`` or a scalar, so that it broadcasts over the
  output channels only (``(C,)`` would broadcast over the width: refused);
* the Conv's output feeds that one node and is not an output of the graph.

It also folds a ``Mul`` by a scalar constant that feeds a ``Gemm`` (directly or through
a ``Flatten``) into the Gemm's weights.

:func:`folded_model` applies it to a model of the registry once and caches the
result in the model cache, keyed by the source's sha256 (checked on every use
by :func:`~mobileface.models.registry.check_cached`).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from mobileface.models import registry

log = logging.getLogger(__name__)

#: bumped when the pass changes what it writes (a cached file of another version is redone)
PASS_VERSION = 3
_FOLDABLE = ("Mul", "Add", "Sub", "Div")


def fold_conv_affine(model):
    """Fold per-channel constant Mul/Add/Sub/Div after Conv nodes into the Conv, in place.

    Returns the number of nodes removed. The model keeps its inputs and outputs
    (the Conv takes over the name of the last node folded into it).
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    removed = 0
    while True:
        consumers = Counter(name for node in graph.node for name in node.input)
        producer = {out: node for node in graph.node for out in node.output}
        folded = False
        for node in list(graph.node):
            if node.op_type not in _FOLDABLE or len(node.input) != 2:
                continue
            conv = _conv_input(node, producer, consumers, outputs)
            if conv is None:
                continue
            const_name = node.input[1] if producer.get(node.input[0]) is conv else node.input[0]
            if node.op_type in ("Sub", "Div") and const_name == node.input[0]:
                continue                # c - conv, c / conv: not affine in the conv's output
            weights = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
            factor = _channel_constant(inits.get(const_name), weights.shape[0], weights.ndim)
            if factor is None:
                continue
            bias = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float32)
                    if len(conv.input) > 2 and conv.input[2] else
                    np.zeros(weights.shape[0], np.float32))
            if node.op_type == "Mul":
                weights, bias = weights * factor.reshape(-1, *[1] * (weights.ndim - 1)), bias * factor
            elif node.op_type == "Div":
                weights, bias = weights / factor.reshape(-1, *[1] * (weights.ndim - 1)), bias / factor
            elif node.op_type == "Add":
                bias = bias + factor
            else:
                bias = bias - factor
            stem = node.output[0]
            w_name, b_name = f"{stem}__folded_W", f"{stem}__folded_B"
            graph.initializer.extend([numpy_helper.from_array(weights.astype(np.float32), w_name),
                                      numpy_helper.from_array(bias.astype(np.float32), b_name)])
            inits[w_name], inits[b_name] = graph.initializer[-2], graph.initializer[-1]
            del conv.input[1:]
            conv.input.extend([w_name, b_name])
            conv.output[0] = stem
            graph.node.remove(node)
            removed += 1
            folded = True
            break               # the maps are stale: rebuild them
        if not folded:
            break
    removed += _fold_scalar_into_gemm(graph, inits, outputs)
    _drop_unused_initializers(graph)
    return removed


def _fold_scalar_into_gemm(graph, inits, outputs) -> int:
    """Fold ``Mul(x, scalar)`` whose output reaches a Gemm's first input (directly or through
    one Flatten, which commutes with a scalar) into that Gemm's weights; nodes removed.
    (The gender net scales by its dropout factor this way before each fully connected
    layer: 12% of its float time.)"""
    from onnx import numpy_helper

    removed = 0
    while True:
        consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        folded = False
        for node in list(graph.node):
            if node.op_type != "Mul" or len(node.input) != 2 or node.output[0] in outputs:
                continue
            const = [n for n in node.input if n in inits]
            if len(const) != 1:
                continue
            value = numpy_helper.to_array(inits[const[0]])
            if value.size != 1 or value.dtype.kind != "f":
                continue
            after = consumers.get(node.output[0], [])
            if len(after) != 1:
                continue
            nxt = after[0]
            if nxt.op_type == "Flatten" and nxt.output[0] not in outputs:
                gemms = consumers.get(nxt.output[0], [])
            else:
                gemms = [nxt]
            if len(gemms) != 1 or gemms[0].op_type != "Gemm" \
                    or gemms[0].input[0] != (nxt.output[0] if nxt is not gemms[0]
                                             else node.output[0]):
                continue
            gemm = gemms[0]
            if len(gemm.input) < 2 or gemm.input[1] not in inits:
                continue
            # into the weights, not alpha: onnxruntime's quantiser leaves a Gemm whose alpha
            # is not 1 in float (measured: the gender net's int8 Gemm then dequantised its
            # weights on every run, a third of its time)
            weights = numpy_helper.to_array(inits[gemm.input[1]]).astype(np.float32)
            w_name = f"{gemm.output[0]}__folded_B"
            graph.initializer.append(numpy_helper.from_array(
                weights * np.float32(value.reshape(())), w_name))
            inits[w_name] = graph.initializer[-1]
            gemm.input[1] = w_name
            source = next(n for n in node.input if n != const[0])
            for other in graph.node:      # the Mul's consumer reads the Mul's input instead
                for k, name in enumerate(other.input):
                    if name == node.output[0]:
                        other.input[k] = source
            graph.node.remove(node)
            removed += 1
            folded = True
            break
        if not folded:
            return removed


def _conv_input(node, producer, consumers, outputs):
    """The Conv feeding ``node`` when its output goes nowhere else, else None."""
    for name in node.input:
        conv = producer.get(name)
        if conv is not None and conv.op_type == "Conv" and consumers[name] == 1 \
                and name not in outputs and len(conv.input) >= 2:
            return conv
    return None


def _channel_constant(init, channels: int, rank: int):
    """The (C,) values of a float initializer that broadcasts over the channel axis of an
    output of ``rank`` dimensions only, else None."""
    if init is None:
        return None
    from onnx import numpy_helper

    value = numpy_helper.to_array(init)
    if value.dtype.kind != "f" or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape[0] != 1 or shape[1] not in (1, channels) or any(d != 1 for d in shape[2:]):
        return None
    return np.broadcast_to(value.reshape(-1).astype(np.float32), (channels,)).copy()


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def optimize_graph(source: Path, target: Path) -> None:
    """Save onnxruntime's EXTENDED-level optimised graph of ``source`` to ``target`` (constant
    folding, redundant nodes removed, Conv/Add/activation fusions; the file holds
    onnxruntime's own fused operators and runs only in onnxruntime)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])


def op_counts(model) -> Counter:
    """How many nodes of each type the graph has."""
    return Counter(node.op_type for node in model.graph.node)


def folded_path(name: str) -> Path:
    """Where the folded copy of registry model ``name`` is cached (keyed by its sha256)."""
    return registry.cache_dir() / f"{name}-{registry.get_spec(name).sha256[:16]}-folded.onnx"


def folded_model(name: str) -> Path:
    """The registry model ``name`` with :func:`fold_conv_affine` applied, from the cache
    (made on first use; made again when the cached file is damaged or stale)."""
    target = folded_path(name)
    source = registry.get_spec(name).sha256
    state = registry.check_cached(target, source_sha256=source, pass_version=PASS_VERSION)
    if state == "ok":
        return target
    if state == "record made by another version":
        log.debug("%s: cached folded model made by another version of the pass; folding again",
                  name)
    elif state != "missing":
        log.warning("%s: cached folded model unusable (%s); folding again", name, state)
    import onnx

    model = onnx.load_from_string(registry.onnx_bytes(name))
    before = sum(op_counts(model).values())
    removed = fold_conv_affine(model)
    onnx.checker.check_model(model)
    registry.write_cached(model.SerializeToString(), target, source_sha256=source,
                          pass_version=PASS_VERSION, nodes_before=before, nodes_removed=removed)
    log.debug("%s: folded %d Mul/Add nodes into convolutions (%d -> %d nodes)",
              name, removed, before, before - removed)
    return target
