import pytest

from sweep import SweepError, load_study_file, shipped_studies
from sweep.sampling import distributions, make_pruner, make_sampler


def test_shipped_studies_are_valid():
    assert {"quick", "default", "paper", "beyond"} <= set(shipped_studies())
    beyond = load_study_file("beyond")
    assert {"augment", "momentum", "nesterov", "weight_decay", "label_smoothing", "lr_schedule"} <= set(beyond.search)
    from sweep.sampling import ScheduleAwarePruner

    assert isinstance(make_pruner(beyond), ScheduleAwarePruner)
    quick = load_study_file("quick")
    assert quick.data.source == "synthetic"
    assert set(quick.search) == {"epochs", "batch_size", "lr", "optimizer"}
    default = load_study_file("default")
    assert default.data.source == "fer2013" and default.fixed["width"] == 1.0
    paper = load_study_file("paper")
    assert paper.data.split == "paper"
    assert paper.enqueue[0] == {"epochs": 200, "batch_size": 128, "lr": 0.05, "optimizer": "sgd"}
    cfg = paper.config_for(paper.enqueue[0], seed=0)
    assert (cfg.momentum, cfg.weight_decay, cfg.augment, cfg.width) == (0.0, 1e-5, False, 1.0)
    for spec in (quick, default, paper):
        d = distributions(spec)
        assert set(d) == set(spec.search)
        make_sampler(spec, 0), make_pruner(spec)


BASE = """
[search]
lr = { low = 1e-3, high = 0.1, log = true }
"""

BAD = {
    "unknown top key": ("colour = 1\n" + BASE, "colour: unknown key"),
    "unknown search key": ("[search]\nlearning_rate = { low = 0.1, high = 1 }\n", "search.learning_rate: unknown key"),
    "unknown optimizer": ("[search]\noptimizer = { choices = ['sgd', 'lbfgs'] }\n", r"search.optimizer.choices\[1\]: unknown optimizer 'lbfgs'"),
    "unknown fixed optimizer": ("[fixed]\noptimizer = 'lion'\n", "fixed.optimizer: unknown optimizer"),
    "empty choices": ("[search]\nbatch_size = { choices = [] }\n", "search.batch_size.choices: must be a non-empty list"),
    "low > high": ("[search]\nepochs = { low = 9, high = 3 }\n", r"search.epochs: low \(9\) is greater than high \(3\)"),
    "log includes 0": ("[search]\nweight_decay = { low = 0.0, high = 0.1, log = true }\n", "search.weight_decay: a log range needs low > 0"),
    "float epochs": ("[search]\nepochs = { low = 1.5, high = 3 }\n", "search.epochs.low: must be an integer"),
    "lr zero": ("[search]\nlr = { low = 0.0, high = 0.1 }\n", "search.lr.low: lr must be > 0"),
    "fixed and searched": ("[fixed]\nlr = 0.1\n" + BASE, "search.lr: is also in \\[fixed\\]"),
    "unknown sampler": (BASE + "[sampler]\nname = 'cmaes'\n", "sampler.name: unknown sampler 'cmaes'"),
    "unknown pruner key": (BASE + "[pruner]\nname = 'median'\npatience = 3\n", "pruner.patience: unknown key"),
    "grid with range": (BASE + "[sampler]\nname = 'grid'\n", "search.lr: the grid sampler needs"),
    "bad split": ("[data]\nsplit = 'random'\n" + BASE, "data.split: unknown split 'random'"),
    "seed searched": ("[search]\nseed = { low = 1, high = 3 }\n", "search.seed: unknown key"),
    "bool range": ("[search]\naugment = { low = 0, high = 1 }\n", "search.augment: takes { choices"),
    "nesterov without momentum": ("[fixed]\nnesterov = true\n" + BASE, "fixed.nesterov: nesterov needs momentum > 0"),
    "enqueue outside space": (BASE + "[[enqueue]]\nlr = 0.5\n", r"enqueue\[0\].lr: value 0.5 is outside"),
    "enqueue unsearched": (BASE + "[[enqueue]]\nepochs = 5\n", r"enqueue\[0\].epochs: is not a searched parameter"),
    "not toml": ("[search\nlr=", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_file_names_file_and_key(tmp_path, case):
    text, expected = BAD[case]
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SweepError, match=expected) as e:
        load_study_file(str(p))
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unknown_study_name_lists_the_shipped_ones():
    with pytest.raises(SweepError, match="unknown study 'nope'.*quick"):
        load_study_file("nope")


def test_grid_and_extra_parameters_parse(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text("""
[fixed]
momentum = 0.9
[search]
batch_size = { choices = [32, 64] }
nesterov = { choices = [true, false] }
weight_decay = { low = 1e-6, high = 1e-3, log = true }
[sampler]
name = "random"
[pruner]
name = "hyperband"
reduction_factor = 3
""")
    spec = load_study_file(str(p))
    cfg = spec.config_for({"batch_size": 32, "nesterov": True, "weight_decay": 1e-4}, seed=1)
    assert cfg.nesterov and cfg.momentum == 0.9 and cfg.seed == 1


def test_pruner_compares_only_equal_schedules_when_the_lr_schedule_stretches(tmp_path):
    import optuna

    from sweep.sampling import ScheduleAwarePruner

    p = tmp_path / "cos.toml"
    p.write_text("""
[fixed]
lr_schedule = "cosine"
[search]
epochs = { choices = [4, 40] }
[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
""")
    pruner = make_pruner(load_study_file(str(p)))
    assert isinstance(pruner, ScheduleAwarePruner)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    dist = {"epochs": optuna.distributions.CategoricalDistribution([4, 40])}

    def trial_with(epochs):
        study.enqueue_trial({"epochs": epochs})
        return study.ask(dist)

    # Two short runs good at epoch 1, two long ones poor at epoch 1 (their lr is still high).
    for epochs, v in [(4, 0.6), (4, 0.62), (40, 0.3), (40, 0.32)]:
        t = trial_with(epochs)
        t.report(v, 1)
        study.tell(t, v)
    long_run = trial_with(40)
    long_run.report(0.33, 1)
    # Among 40-epoch runs 0.33 is above the median: not pruned, though every 4-epoch run beat it.
    assert not long_run.should_prune()
    short_run = trial_with(4)
    short_run.report(0.33, 1)
    assert short_run.should_prune()  # among 4-epoch runs it is below the median
