"""leanlm.core.swap: the one module-swap API and its one exclusion rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanlm.core.swap import excluded, find_modules, parse_patterns, swap_linears


class Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(4, 4), nn.Linear(4, 2)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = Attn()
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(4, 10, bias=False)


class Marked(nn.Linear):
    """A stand-in replacement layer: same Parameters, remembers where it came from."""

    @classmethod
    def of(cls, m: nn.Linear) -> Marked:
        new = cls(m.in_features, m.out_features, m.bias is not None, device="meta")
        new.weight, new.bias = m.weight, m.bias
        return new


ALL = [
    "layers.0.self_attn.q_proj",
    "layers.0.self_attn.k_proj",
    "layers.0.mlp.0",
    "layers.0.mlp.2",
    "layers.1.self_attn.q_proj",
    "layers.1.self_attn.k_proj",
    "layers.1.mlp.0",
    "layers.1.mlp.2",
    "lm_head",
]


def test_excluded_is_fnmatch_on_the_full_name_or_a_dotted_suffix():
    name = "model.layers.3.self_attn.k_proj"
    assert (
        excluded(name, ["k_proj"]) and excluded(name, ["*.k_proj"]) and excluded(name, ["self_attn.k_proj"])
    )
    assert excluded(name, ["model.layers.3.*"]) and excluded(name, ["*.layers.[0-3].*"])
    assert not excluded(name, ["proj"])  # a suffix starts at a dot: "k_proj" is not "...proj"
    assert not excluded(name, ["layers.4.*", "q_proj", "K_PROJ"])  # case-sensitive
    assert not excluded("lm_head_extra", ["lm_head"]) and excluded("lm_head", ["lm_head"])
    assert parse_patterns(" lm_head, *.k_proj ,") == ("lm_head", "*.k_proj")
    assert parse_patterns(None) == parse_patterns("none") == parse_patterns("") == ()


def test_swap_all_linears_in_nested_modules_keeps_parameters_and_outputs():
    net = Net()
    x = torch.randn(3, 4)
    want = net.lm_head(net.layers[1].mlp(net.layers[0].mlp(x)))
    weight = net.layers[1].mlp[2].weight
    names = swap_linears(net, Marked.of)
    assert names == ALL  # model order, full names, nested Sequential/ModuleList included
    assert all(type(net.get_submodule(n)) is Marked for n in names)
    assert net.layers[1].mlp[2].weight is weight  # the same Parameter, not a copy
    assert torch.equal(net.lm_head(net.layers[1].mlp(net.layers[0].mlp(x))), want)
    assert isinstance(net.layers[0].mlp[1], nn.ReLU)


def test_exclude_and_filter_fn_combine():
    net = Net()
    names = swap_linears(net, Marked.of, exclude=("lm_head", "*.k_proj", "layers.1.mlp.*"))
    assert names == [
        "layers.0.self_attn.q_proj",
        "layers.0.mlp.0",
        "layers.0.mlp.2",
        "layers.1.self_attn.q_proj",
    ]
    assert type(net.lm_head) is nn.Linear and type(net.layers[0].self_attn.k_proj) is nn.Linear
    # filter_fn(module, name), as in torchao's quantize_: here only layers whose output width is 4
    net = Net()
    names = swap_linears(net, Marked.of, lambda m, n: isinstance(m, nn.Linear) and m.out_features == 4)
    assert names == [n for n in ALL if n.endswith(("q_proj", "mlp.2"))]


def test_a_matched_module_is_replaced_whole_and_in_place_changes_are_listed():
    net = Net()
    seen: list[str] = []

    def whole_attention(m: nn.Module, name: str) -> bool:
        seen.append(name)
        return isinstance(m, Attn)

    names = swap_linears(net, lambda m: nn.Identity(), whole_attention)
    assert names == ["layers.0.self_attn", "layers.1.self_attn"]
    assert "layers.0.self_attn.q_proj" not in seen  # not visited inside a matched module
    assert isinstance(net.layers[1].self_attn, nn.Identity)
    # make_layer returning the module itself leaves it in place but still names it
    net = Net()
    head = net.lm_head
    assert swap_linears(net, lambda m: m, lambda m, n: n == "lm_head") == ["lm_head"]
    assert net.lm_head is head


def test_tied_module_listed_once_and_nothing_matched_returns_empty():
    net = Net()
    net.layers[1].self_attn = net.layers[0].self_attn  # one module under two names
    found = [n for n, _ in find_modules(net) if "self_attn" in n]
    assert found == ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj"]
    swap_linears(net, Marked.of, exclude=("*.mlp.*", "lm_head"))
    assert type(net.layers[1].self_attn.q_proj) is Marked  # the tie is kept
    assert swap_linears(nn.Sequential(nn.ReLU()), Marked.of) == []
    with pytest.raises(TypeError, match="cannot assign"):
        swap_linears(Net(), lambda m: 3)  # make_layer must return a module: torch refuses anything else
