import random

import pytest
import torch

import secateurs as sc


def _mlp(task, seed=0):
    torch.manual_seed(seed)
    return sc.models.create("mlp", task, hidden=(32,))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_the_same_model_and_history(digits):
    a, b, c = _mlp(digits), _mlp(digits), _mlp(digits)
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    ha = sc.fit(a, digits, epochs=2, seed=3, progress=False)
    hb = sc.fit(b, digits, epochs=2, seed=3, progress=False)
    sc.fit(c, digits, epochs=2, seed=4, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values()))
    assert ha.records == hb.records
    assert not all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(c).values()))


def test_fit_leaves_the_global_random_state_alone(digits):
    model = _mlp(digits)
    torch.manual_seed(11)
    expected = torch.rand(1)
    torch.manual_seed(11)
    sc.fit(model, digits, epochs=1, progress=False)
    assert torch.equal(torch.rand(1), expected)


def test_history_has_one_record_per_epoch(digits):
    history = sc.fit(_mlp(digits), digits, epochs=3, lr=3e-3, progress=False)
    assert [r["epoch"] for r in history.records] == [1, 2, 3]
    assert history.val_acc[-1] > 0.8 and history.train_loss[-1] < history.train_loss[0]
    assert history.records[-1]["lr"] < history.records[0]["lr"]  # cosine decay


class L2(sc.LossTerm):
    name = "l2"

    def __init__(self, weight):
        self.weight = weight
        self.setups = self.teardowns = 0

    def setup(self, model, task, teacher=None):
        self.setups += 1

    def teardown(self, model):
        self.teardowns += 1

    def __call__(self, step):
        return self.weight * sum((p**2).sum() for p in step.model.parameters())


def test_loss_term_is_added_to_the_task_loss(digits):
    plain, regularized = _mlp(digits), _mlp(digits)
    regularized.load_state_dict(plain.state_dict())
    term = L2(0.5)
    sc.fit(plain, digits, epochs=2, optimizer="sgd", lr=0.1, progress=False)
    history = sc.fit(
        regularized, digits, epochs=2, optimizer="sgd", lr=0.1, losses=[term], progress=False
    )
    norm = lambda m: float(sum((p.detach() ** 2).sum() for p in m.parameters()))  # noqa: E731
    assert norm(regularized) < 0.5 * norm(plain)
    assert history["loss/l2"][-1] > 0 and len(history["loss/l2"]) == 2
    assert (term.setups, term.teardowns) == (1, 1)


def test_plain_callables_work_as_loss_terms(digits):
    seen = []
    sc.fit(
        _mlp(digits),
        digits,
        epochs=1,
        losses=[lambda s: seen.append(s.step) or 0 * s.outputs.sum()],
        progress=False,
    )
    assert seen == list(range(len(digits.loader("train"))))


class Counter(sc.Callback):
    def __init__(self, stop_at=None):
        self.calls = dict.fromkeys(
            ("fit_start", "epoch_start", "step_end", "epoch_end", "fit_end"), 0
        )
        self.stop_at = stop_at

    def on_fit_start(self, state):
        self.calls["fit_start"] += 1

    def on_epoch_start(self, state):
        self.calls["epoch_start"] += 1

    def on_step_end(self, state):
        self.calls["step_end"] += 1
        if self.stop_at is not None and state.step == self.stop_at:
            state.stop = True

    def on_epoch_end(self, state):
        self.calls["epoch_end"] += 1

    def on_fit_end(self, state):
        self.calls["fit_end"] += 1


def test_callbacks_are_told_every_event(digits):
    counter = Counter()
    sc.fit(_mlp(digits), digits, epochs=2, batch_size=100, callbacks=[counter], progress=False)
    steps = len(digits.loader("train", batch_size=100))
    assert counter.calls == {
        "fit_start": 1,
        "epoch_start": 2,
        "step_end": 2 * steps,
        "epoch_end": 2,
        "fit_end": 1,
    }


def test_a_callback_can_stop_training(digits):
    counter = Counter(stop_at=5)
    history = sc.fit(_mlp(digits), digits, epochs=3, callbacks=[counter], progress=False)
    assert counter.calls["step_end"] == 5 and len(history) == 1


def test_teacher_logits_reach_loss_terms_and_the_teacher_never_trains(digits):
    teacher = _mlp(digits).train()
    before = _state(teacher)
    checked = []

    def term(step):
        with torch.no_grad():
            expected = teacher(step.inputs)
        assert not teacher.training
        assert torch.equal(step.teacher_outputs, expected)
        assert not step.teacher_outputs.requires_grad
        checked.append(True)
        return torch.nn.functional.mse_loss(step.outputs, step.teacher_outputs)

    sc.fit(_mlp(digits), digits, epochs=1, losses=[term], teacher=teacher, progress=False)
    assert checked and teacher.training  # its mode is restored
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_sgd_trains_too(digits):
    model = _mlp(digits)
    sc.fit(model, digits, epochs=5, optimizer="sgd", lr=0.1, progress=False)
    assert sc.evaluate(model, digits) > 0.85


def test_diverging_training_fails_with_advice(digits):
    with pytest.raises(FloatingPointError, match="lower lr"):
        sc.fit(
            _mlp(digits),
            digits,
            epochs=1,
            losses=[lambda s: s.outputs.sum() * float("inf")],
            progress=False,
        )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"epochs": -1}, ValueError, "epochs must be >= 0, got -1"),
        ({"epochs": 1.5}, TypeError, "epochs must be an integer"),
        ({"lr": 0}, ValueError, "lr must be > 0.0"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of 'adam', 'adamw', 'sgd'"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"losses": [3]}, TypeError, r"losses\[0\] must be a LossTerm or a callable"),
        ({"callbacks": [print]}, TypeError, r"callbacks\[0\] must be a secateurs Callback"),
        ({"teacher": "big"}, TypeError, "teacher must be a torch.nn.Module"),
    ],
)
def test_fit_validates_arguments_first(digits, kwargs, error, message):
    model = _mlp(digits)
    before = _state(model)
    with pytest.raises(error, match=message):
        sc.fit(model, digits, **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_evaluate_matches_a_manual_count_and_restores_mode(digits):
    model = _mlp(digits).train()
    x, y = digits.test.tensors
    with torch.no_grad():
        model.eval()
        expected = float((model(x).argmax(1) == y).float().mean())
        model.train()
    assert sc.evaluate(model, digits) == pytest.approx(expected)
    assert model.training
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'test'"):
        sc.evaluate(model, digits, split="dev")


def test_fit_does_not_touch_python_random(digits):
    random.seed(5)
    expected = random.random()
    random.seed(5)
    sc.fit(_mlp(digits), digits, epochs=1, progress=False)
    assert random.random() == expected


def test_progress_is_a_bar_where_a_person_reads_and_a_log_line_elsewhere(digits, monkeypatch):
    from secateurs import _progress, train
    from secateurs.train import _default_progress, _LogProgress

    assert isinstance(_default_progress(), _LogProgress)  # pytest captures the output

    class Spy(train.RichProgress):
        epochs = 0

        def on_epoch_end(self, state):
            Spy.epochs += 1
            super().on_epoch_end(state)

    monkeypatch.setattr(_progress, "interactive", lambda: True)
    monkeypatch.setattr(train, "RichProgress", Spy)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    history = sc.fit(model, digits, epochs=2, progress=True)
    assert Spy.epochs == 2 and len(history.records) == 2  # the bar advanced every epoch
    Spy.epochs = 0
    sc.fit(model, digits, epochs=1, progress=False)
    assert Spy.epochs == 0
