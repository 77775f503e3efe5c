"""The schema's one rule: counting a large invalid batch column by column gives what cleaning each customer gives."""

import random

import pytest

from churn.model.schema import FEATURES, MAX_DETAILS, SAMPLE_CUSTOMER, Problems, clean_customer, clean_customers

DATASET_SAMPLE = {f.column: SAMPLE_CUSTOMER[f.name] for f in FEATURES}


def one_by_one(objects: list) -> Problems:
    problems = Problems()
    for index, obj in enumerate(objects):
        clean_customer(obj, problems, index)
    return problems


def damaged(rng: random.Random, customer: dict) -> dict:
    """The customer with a few fields damaged in the ways bodies are: blank, wrong type, unknown, missing, renamed."""
    damaged = dict(customer)
    for key in rng.sample(sorted(customer), rng.randint(0, 4)):
        damage = rng.choice(["blank", "list", "unknown", "missing", "bool", "nan", "float", "upper", "second"])
        value = damaged.pop(key)
        if damage == "upper":
            damaged[key.upper()] = value
        elif damage == "second":  # a second spelling of the same field, agreeing or not
            damaged[key], damaged[key.upper()] = value, rng.choice([value, "zzz"])
        elif damage != "missing":
            damaged[key] = {"blank": "", "list": [], "unknown": "zzz", "bool": True, "nan": float("nan")}.get(
                damage, 0.5
            )
    if rng.random() < 0.1:
        damaged["customerID"] = rng.choice(["id-1", 7, [1], 2.5])
    return damaged


@pytest.mark.parametrize("sample", [SAMPLE_CUSTOMER, DATASET_SAMPLE], ids=["model", "dataset"])
@pytest.mark.parametrize("seed", range(3))
def test_counting_a_large_invalid_batch_gives_what_cleaning_each_customer_gives(sample, seed):
    rng = random.Random(seed)
    objects = [damaged(rng, sample) for _ in range(3000)] + [[], "text", None, {f"k{i}": 1 for i in range(1001)}]
    rng.shuffle(objects)
    reference = one_by_one(objects)
    counted = Problems()
    clean_customers(objects, counted)
    assert reference.errors > MAX_DETAILS
    assert (counted.errors, counted.customers, counted.details) == (
        reference.errors,
        reference.customers,
        reference.details,
    )


@pytest.mark.parametrize(
    "value", ["", [], {}, "zzz", True, None, 1e300], ids=["blank", "list", "object", "unknown", "bool", "null", "huge"]
)
def test_a_batch_of_one_invalid_value_everywhere_is_counted_exactly(value):
    objects = [{f.name: value for f in FEATURES} for _ in range(1000)]
    counted = Problems()
    clean_customers(objects, counted)
    reference = one_by_one(objects)
    assert (counted.errors, counted.customers) == (reference.errors, reference.customers)
    assert reference.customers == 1000 and reference.errors >= 18_000  # a blank TotalCharges is 0, and valid


def test_a_refusal_says_what_is_allowed_in_words_true_for_every_channel():
    """The same sentence reaches an API client, a CSV's rejects file and the page: it names no channel."""
    for feature in FEATURES:
        for value in ("0x10", " 1e1 ", [], True, -1, "zzz"):
            _, problem = feature.check(value)
            if problem:
                assert "JSON" not in problem and "1e+" not in problem, problem
    assert FEATURES[4].check("0x10")[1] == "Input should be a whole number from 0 to 1200, written in decimal digits"
