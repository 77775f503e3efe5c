"""churn.model.training: same_fit, the check that keeps the committed model when a retrain differs only by rounding."""

from churn.model.training import load_model, same_fit
from devtools import MODEL_FILE


def test_same_fit_allows_rounding_noise_and_nothing_more(tmp_path):
    dv, model = load_model(MODEL_FILE)
    assert same_fit(MODEL_FILE, dv, model)
    model.coef_ = model.coef_ + 3e-14  # what another machine's BLAS gives
    assert same_fit(MODEL_FILE, dv, model)
    model.coef_[0, 0] += 1e-6
    assert not same_fit(MODEL_FILE, dv, model)

    dv, model = load_model(MODEL_FILE)
    model.C = 0.1
    assert not same_fit(MODEL_FILE, dv, model)
    dv, model = load_model(MODEL_FILE)
    dv.vocabulary_ = {**dv.vocabulary_, "gender=other": len(dv.vocabulary_)}
    assert not same_fit(MODEL_FILE, dv, model)

    damaged = tmp_path / "model.bin"
    damaged.write_bytes(MODEL_FILE.read_bytes()[:100])
    assert not same_fit(damaged, *load_model(MODEL_FILE))
