"""``dpa4 models``: the shipped models by name, with elements, preset, parameters, training data and held-out
errors from their cards (entry point ``models = "dpa4_core.pretrained.cli:register"`` in ``dpa4.commands``)."""

from __future__ import annotations

from dpa4_core.pretrained import COMMITTEES, MODELS, PretrainedModel


def describe(model: PretrainedModel) -> str:
    errors = "; ".join(f"{subset} {e:.1f} meV/atom, {f:.0f} meV/A" for subset, (e, f) in model.errors.items())
    present = "" if model.path.is_file() else "  (file missing from this installation)"
    return "\n".join([
        f"{model.name}{present}",
        f"  elements:   {', '.join(model.elements)}",
        f"  preset:     {model.preset}, {model.parameters:,} parameters",
        f"  reference:  {model.reference}",
        f"  data:       {model.training_data}",
        f"  held out:   {model.test_split}: {errors}",
        f"  card:       {model.card_path}",
    ])


def _cmd_models(args) -> int:
    names = args.names or sorted(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known models: {', '.join(sorted(MODELS))}")
    print("\n\n".join(describe(MODELS[n]) for n in names))
    if not args.names:
        for name, members in COMMITTEES.items():
            print(f"\n{name} (committee for `dpa4 screen --committee {name}`): {', '.join(members)}")
    return 0


def register(sub) -> None:
    """Add ``models`` to the ``dpa4`` parser's subcommands."""
    p = sub.add_parser("models", help="list the shipped models (use a name wherever a checkpoint path is taken)")
    p.add_argument("names", nargs="*", help="only these models")
    p.set_defaults(func=_cmd_models)
