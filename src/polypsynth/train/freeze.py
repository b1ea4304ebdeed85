"""Freeze U-Net modules by name prefix (study stage 2 keeps some encoder layers fixed)."""

from __future__ import annotations

from polypsynth.errors import ConfigError


def valid_prefixes(module) -> list[str]:
    """Top-level children, with numbered entries of module lists spelled out (down_blocks.0)."""
    names = []
    for name, child in module.named_children():
        names.append(name)
        if child.__class__.__name__ == "ModuleList":
            names += [f"{name}.{i}" for i in range(len(child))]
    return names


def check_prefixes(module, prefixes, where: str = "freeze") -> list[str]:
    """The parameter names under the prefixes; a ConfigError naming a prefix that matches none."""
    matched = []
    named = [n for n, _ in module.named_parameters()]
    for prefix in prefixes:
        hits = [n for n in named if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ConfigError(
                f"{where}: prefix {prefix!r} matches no U-Net parameter; valid prefixes: {', '.join(valid_prefixes(module))}"
            )
        matched += hits
    return matched


def freeze_modules(module, prefixes, where: str = "freeze") -> list[str]:
    """Set requires_grad=False on every parameter under the prefixes; returns the frozen names."""
    frozen = check_prefixes(module, prefixes, where)
    named = list(module.named_parameters())
    keep = set(frozen)
    for name, param in named:
        if name in keep:
            param.requires_grad_(False)
    return frozen
