"""Train the churn model: cross-validate, fit on the full training split, test, and pickle (dv, model).

python train.py [--data PATH] [--C 1.0] [--n-splits 5] [--output model_C=1.0.bin] [--report DIR]
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import roc_auc_score

from churn.model import data
from churn.model.modelfile import EXPLANATION_KEY, REFERENCE_KEY, sidecar_path
from churn.model.training import (
    FIT_RTOL,
    cross_validate,
    encode,
    explanation_stats,
    fit,
    mean_abs_contributions,
    predict,
    same_fit,
    save_model,
    split,
)
from churn.monitor.drift import build_reference


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        help="the CSV (default: the first of $CHURN_DATA, ../shared/data/, data/ that has it, else a download)",
    )
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength (default 1.0)")
    parser.add_argument("--n-splits", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--output", type=Path, help="model file (default: model_C={C}.bin)")
    parser.add_argument("--report", type=Path, help="also write the training report (metrics and plots) here")
    return parser.parse_args(argv)


def dataset_path(path: Path | None) -> Path:
    """--data, else the dataset where the tests find it, else a download to data/ (DataError offline)."""
    if path is None:
        return data.find_data() or data.download_data()
    if not path.is_file():
        raise data.DataError(f"--data {path}: no such file")
    return path


def main(argv=None):
    args = parse_args(argv)
    output = args.output or Path(f"model_C={args.C}.bin")
    try:
        data_path = dataset_path(args.data)
    except data.DataError as e:
        sys.exit(f"train.py: {e}")  # one line for a person, not a traceback
    df = data.load_data(data_path)
    df_full_train, df_test = split(df)

    print(f"doing validation with C={args.C}")
    aucs = cross_validate(
        df_full_train, args.C, args.n_splits, on_fold=lambda fold, auc: print(f"auc on fold {fold} is {auc:.3f}")
    )
    print("validation results:")
    print(f"C={args.C} {np.mean(aucs):.3f} +- {np.std(aucs):.3f}")

    print("training the final model")
    dv, model = fit(df_full_train, args.C)
    test_auc = roc_auc_score(df_test[data.TARGET], predict(df_test, dv, model))
    print(f"auc={test_auc:.3f}")

    output.parent.mkdir(parents=True, exist_ok=True)
    # Rewriting a model for 1e-14 of floating-point noise would show it changed (and dirty the repository).
    if output.exists() and same_fit(output, dv, model):
        print(f"kept {output}: it holds this fit (the same state, coefficients within {FIT_RTOL:g})")
    else:
        save_model(output, dv, model)
    X_full_train = encode(df_full_train, dv)
    metrics = {
        "model_file": output.name,
        "data_sha256": data.file_sha256(data_path),
        "rows": len(df),
        "params": {
            "C": args.C,
            "n_splits": args.n_splits,
            **{k: v for k, v in model.get_params().items() if k in ("solver", "max_iter")},
        },
        "cv_auc": aucs,
        "cv_auc_mean": float(np.mean(aucs)),
        "cv_auc_std": float(np.std(aucs)),
        "test_auc": float(test_auc),
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        # What /explain needs: the means of the model's columns over the split it was fitted on.
        EXPLANATION_KEY: explanation_stats(dv, X_full_train),
        # What drift is measured against (docs/monitoring.md): the same split's distributions.
        REFERENCE_KEY: build_reference(
            df_full_train, model.predict_proba(X_full_train)[:, 1], mean_abs_contributions(dv, model, X_full_train)
        ).to_json(),
    }
    sidecar = sidecar_path(output)
    sidecar.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"the model is in {output}, its metrics in {sidecar}")
    if args.report:
        # Imported here: matplotlib is a training-only dependency.
        from churn.model.report import write_report

        write_report(args.report, metrics, df_test[data.TARGET].to_numpy(), predict(df_test, dv, model))
        print(f"the training report is in {args.report}")


if __name__ == "__main__":
    main()
