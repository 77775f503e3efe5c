"""The customer contract, defined once: it drives request validation, batch scoring, the OpenAPI document and the
web form.

Each feature is named as the dataset spells it; the model's spelling is derived with the training cleaning
(data.clean_text). A field name or a category is accepted exactly when clean_text maps it to one the model knows,
and a number may be a JSON number or the text training's read_csv reads as one. Feature.clean is that rule for
one value and clean_customer for a whole customer; EXACT_CUSTOMER is a fast acceptor for the two common
spellings (the model's and the dataset's) that gives the same values, and leaves everything else to them.
"""

import operator
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from operator import itemgetter
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from churn.model.data import clean_text

BLANK_TEXT = r"^ *$"


def up_to(n: int) -> str:
    """A pattern for the whole numbers 0 to n written without leading zeros."""
    digits = str(n)
    width = len(digits)
    choices = [f"[0-9]{{1,{width - 1}}}"] if width > 1 else []
    for i, digit in enumerate(map(int, digits)):
        lowest = 1 if i == 0 and width > 1 else 0
        if digit > lowest:
            rest = width - i - 1
            choices.append(digits[:i] + f"[{lowest}-{digit - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(" + "|".join(choices + [digits]) + ")"


class InvalidValue(ValueError):
    """A value the model cannot take; the message says what is allowed."""


@dataclass(frozen=True)
class Feature:
    column: str  # the dataset's own column name
    description: str
    values: tuple = ()  # the dataset's own category spellings; empty for a number
    minimum: float = 0
    maximum: float | None = None
    integer: bool = False
    # What a reason says (churn.model.explain): {dataset's value: sentence} for a category; for a number, two functions
    # of the value, (above the training mean, below it). Every feature has them: a test checks.
    phrases: Any = field(default=None, compare=False, repr=False)

    @cached_property
    def name(self) -> str:
        return clean_text(self.column)

    @cached_property
    def categorical(self) -> bool:
        return bool(self.values)

    @cached_property
    def clean_values(self) -> tuple:
        return tuple(clean_text(v) for v in self.values)

    def constraints(self) -> dict:
        """What a client may send for this feature, as the error details and the model card state it."""
        if self.categorical:
            return {"type": "string", "allowed": list(self.clean_values)}  # case and spaces do not matter
        return {"type": "integer" if self.integer else "number", "minimum": self.minimum, "maximum": self.maximum}

    @property
    def accepted_values(self) -> tuple:
        """The model's spellings, then the dataset's where they differ: what the fast acceptor takes as it is."""
        return tuple(dict.fromkeys(self.clean_values + self.values))

    @cached_property
    def _canonical(self) -> dict:
        return {spelling: clean_text(spelling) for spelling in self.accepted_values}

    @property
    def blank_is_zero(self) -> bool:
        # The dataset keeps TotalCharges as text, blank in a customer's first month, which training reads as 0.
        return self.name == "totalcharges"

    def clean(self, value):
        """The model's value for what a client sent, or InvalidValue: the one rule for a single value."""
        clean, problem = self.check(value)
        if problem:
            raise InvalidValue(problem)
        return clean

    def check(self, value) -> tuple[Any, str | None]:
        """(the model's value, None), or (None, what is allowed): clean() without an exception, which costs more
        than the check itself when a body holds thousands of invalid values."""
        if self.categorical:
            canonical = self._canonical.get(value) if value.__class__ is str else None
            if canonical is None and isinstance(value, str) and (cleaned := clean_text(value)) in self.clean_values:
                canonical = cleaned
            return (canonical, None) if canonical is not None else (None, self._messages["category"])
        if value.__class__ is str:
            if self.blank_is_zero and not value.strip(" "):
                return 0.0, None
            if not self._text.fullmatch(value):
                return None, self._messages["type"]
            value = float(value)
        elif value.__class__ not in (int, float):  # bool is an int subclass: true is no number here
            return None, self._messages["type"]
        if value != value or not self.minimum <= value <= self.maximum:  # NaN fails every comparison
            return None, self.expected
        if self.integer:
            if value.__class__ is float:
                return (int(value), None) if value.is_integer() else (None, self._messages["whole"])
            return value, None
        return float(value), None

    @cached_property
    def _messages(self) -> dict[str, str]:
        """Each refusal's sentence, made once; true whichever way the value came (JSON, a CSV cell, the form)."""
        if self.categorical:
            allowed = ", ".join(repr(v) for v in self.clean_values)
            return {"category": f"Input should be one of {allowed} (case and spaces do not matter)"}
        return {"type": f"{self.expected}, written in decimal digits", "whole": "Input should be a whole number"}

    @property
    def expected(self) -> str:
        return f"Input should be a {self.kind} {self.range}"

    @property
    def range(self) -> str:
        """'from 0 to 100000000': the bounds as a person writes them (not 1e+08), and as JSON and JavaScript do."""
        return f"from {self.minimum:.15g} to {self.maximum:.15g}"

    @property
    def kind(self) -> str:
        return "whole number" if self.integer else "number"

    @cached_property
    def text_pattern(self) -> str:
        """The numbers this field takes, written as text: decimal (as read_csv reads it: an optional +, surrounding
        spaces, leading zeros), no exponent, and in range. The rule for text, and the OpenAPI document's pattern."""
        assert self.minimum == 0 and float(self.maximum).is_integer(), "patterns are built for ranges 0..N"
        top = int(self.maximum)
        if self.integer:
            number = f"0*{up_to(top)}(\\.0*)?"
        else:
            number = f"0*{up_to(top - 1)}(\\.[0-9]*)?|0*{top}(\\.0*)?|\\.[0-9]+"
        return f"^ *\\+?({number}) *$"

    @cached_property
    def _text(self) -> re.Pattern:
        return re.compile(self.text_pattern)


RAISES = " raises the churn risk"


def category(column: str, description: str, phrases: dict[str, str]) -> Feature:
    """A categorical feature: its values as the dataset spells them, each with what it means to a marketer."""
    return Feature(column, description, tuple(phrases), phrases={v: phrase + RAISES for v, phrase in phrases.items()})


def yes_no(column: str, description: str, yes: str, no: str) -> Feature:
    return category(column, description, {"Yes": yes, "No": no})


def addon(column: str, description: str, name: str) -> Feature:
    return category(
        column,
        description,
        {"Yes": f"Having {name}", "No": f"No {name}", "No internet service": f"No {name} (no internet service)"},
    )


def months(x) -> str:
    return f"{x:g} month" if x == 1 else f"{x:g} months"


def charges(kind: str) -> tuple:
    return (
        lambda x: f"High {kind} charges (${x:,.2f}) raise the churn risk",
        lambda x: f"Low {kind} charges (${x:,.2f}) raise the churn risk",
    )


# Each feature with its reasons' sentences (churn.model.explain): for a category, by the dataset's spelling of each
# value; for a number, (above the training mean, below it).
FEATURES = (
    category("gender", "Customer's gender", {"Female": "Being female", "Male": "Being male"}),
    Feature(
        "SeniorCitizen",
        "1 if the customer is 65 or older, else 0",
        maximum=1,
        integer=True,
        phrases=(lambda x: "Being a senior citizen" + RAISES, lambda x: "Not being a senior citizen" + RAISES),
    ),
    yes_no("Partner", "Has a partner", "Having a partner", "Having no partner"),
    yes_no("Dependents", "Has dependents", "Having dependents", "Having no dependents"),
    Feature(
        "tenure",
        "Months with the company",
        maximum=1200,
        integer=True,
        phrases=(
            lambda x: f"A long tenure ({months(x)}){RAISES}",
            lambda x: f"A short tenure ({months(x)}){RAISES}",
        ),
    ),
    yes_no("PhoneService", "Has phone service", "Having phone service", "Having no phone service"),
    category(
        "MultipleLines",
        "Has multiple phone lines",
        {"No phone service": "Having no phone line", "No": "A single phone line", "Yes": "Having multiple lines"},
    ),
    category(
        "InternetService",
        "Internet service provider",
        {"DSL": "DSL internet", "Fiber optic": "Fiber optic internet", "No": "Having no internet"},
    ),
    addon("OnlineSecurity", "Has online security", "online security"),
    addon("OnlineBackup", "Has online backup", "online backup"),
    addon("DeviceProtection", "Has device protection", "device protection"),
    addon("TechSupport", "Has tech support", "tech support"),
    addon("StreamingTV", "Streams TV", "streaming TV"),
    addon("StreamingMovies", "Streams movies", "streaming movies"),
    category(
        "Contract",
        "Contract term",
        {
            "Month-to-month": "A month-to-month contract",
            "One year": "A one-year contract",
            "Two year": "A two-year contract",
        },
    ),
    yes_no("PaperlessBilling", "Paperless billing", "Paperless billing", "Paper billing"),
    category(
        "PaymentMethod",
        "Payment method",
        {
            "Electronic check": "Paying by electronic check",
            "Mailed check": "Paying by mailed check",
            "Bank transfer (automatic)": "Paying by automatic bank transfer",
            "Credit card (automatic)": "Paying by automatic credit card",
        },
    ),
    Feature("MonthlyCharges", "Monthly charges in dollars", maximum=100_000, phrases=charges("monthly")),
    Feature(
        "TotalCharges",
        "Total charges in dollars; blank (a new customer) counts as 0",
        maximum=100_000_000,
        phrases=charges("total"),
    ),
)
FEATURES_BY_NAME = {f.name: f for f in FEATURES}
MAX_BATCH_DEFAULT = 10_000

# The course's sample customer: the example in the OpenAPI document, the client's default and the web form's.
SAMPLE_CUSTOMER = {
    "gender": "female",
    "seniorcitizen": 0,
    "partner": "yes",
    "dependents": "no",
    "phoneservice": "no",
    "multiplelines": "no_phone_service",
    "internetservice": "dsl",
    "onlinesecurity": "no",
    "onlinebackup": "yes",
    "deviceprotection": "no",
    "techsupport": "no",
    "streamingtv": "no",
    "streamingmovies": "no",
    "contract": "month-to-month",
    "paperlessbilling": "yes",
    "paymentmethod": "electronic_check",
    "tenure": 1,
    "monthlycharges": 29.85,
    "totalcharges": 29.85,
}


ID_COLUMN = "customerID"  # echoed in each answer when a customer has it, under any spelling of the name
ID_NAME = clean_text(ID_COLUMN)
_FEATURE_OF = {spelling: f for f in FEATURES for spelling in (f.name, f.column)}
MAX_DETAILS = 100  # error details in one answer; the counts beside them say how many there were in all
# Fields in one customer: far more than any export of customer records has, and a bound on the work an object of
# unknown keys can cost (each is looked up under the training's cleaning).
MAX_FIELDS = 1000


def feature_for(key: str) -> Feature | None:
    """The feature a field name means, in any spelling clean_text maps to the model's."""
    return _FEATURE_OF.get(key) or FEATURES_BY_NAME.get(clean_text(key))


def error_detail(field: str | None, message: str, feature: Feature | None = None) -> dict:
    detail = {"field": field, "message": message}
    if feature:
        detail.update(feature.constraints())
    return detail


@dataclass
class Problems:
    """What was wrong with a request's customers: every error counted, the first MAX_DETAILS described."""

    errors: int = 0
    customers: int = 0
    details: list = field(default_factory=list)

    def room(self) -> bool:
        return len(self.details) < MAX_DETAILS

    def add(self, index: int | None, field: str | None, message: str, feature: "Feature | None" = None) -> None:
        """One error; described while there is room (a detail costs more than the check that found it)."""
        self.errors += 1
        if len(self.details) < MAX_DETAILS:
            detail = error_detail(field, message, feature)
            self.details.append(detail if index is None else {"index": index, **detail})


def clean_customer(obj, problems: Problems, index: int | None = None) -> dict | None:
    """A customer as the model reads it (keyed by the model's names, the id under ID_COLUMN), or None with its
    errors added to problems. Other fields are ignored; two spellings of one field must agree."""
    errors_before = problems.errors
    customer = None
    if not isinstance(obj, dict):
        problems.add(index, None, "A customer must be a JSON object")
    elif len(obj) > MAX_FIELDS:
        problems.add(index, None, f"A customer has at most {MAX_FIELDS} fields, not {len(obj)}")
    else:
        customer = _clean_fields(obj, problems, index)
    if problems.errors > errors_before:
        problems.customers += 1
        return None
    return customer


def _clean_fields(obj: dict, problems: Problems, index: int | None) -> dict:
    customer, sent_as = {}, {}
    for key, value in obj.items():
        feature = feature_for(key)
        if feature is not None:
            name = feature.name
            clean, problem = feature.check(value)
        elif clean_text(key) == ID_NAME:
            name = ID_COLUMN
            clean, problem = _check_id(value)
        else:
            continue
        if problem is None and name in sent_as and customer.get(name, clean) != clean:
            problem = conflict(sent_as[name], key)
        if problem is not None:
            problems.add(index, key, problem, feature)
        sent_as.setdefault(name, key)
        if problem is None:
            customer.setdefault(name, clean)
    missing = len(FEATURES) - len(sent_as) + (ID_COLUMN in sent_as)
    if missing and not problems.room():
        problems.errors += missing  # counted, not described: a flood of {} costs little
    elif missing:
        for feature in FEATURES:
            if feature.name not in sent_as:
                problems.add(index, feature.name, "Field required", feature)
    return customer


def clean_customers(objects: list, problems: Problems) -> list[dict | None]:
    """clean_customer for each object of a batch, in order, until the details are full; from then on the request is
    refused whatever follows, and the rest is only counted, a column at a time (count_problems)."""
    customers = []
    for index, obj in enumerate(objects):
        if not problems.room():
            count_problems(objects[index:], problems)
            break
        customers.append(clean_customer(obj, problems, index))
    return customers


def count_problems(objects: list, problems: Problems) -> None:
    """Count the errors and invalid customers clean_customer would find, without describing them, at a cost below
    that of scoring as many valid customers: customers with the same keys are checked a field at a time, and each
    distinct value of a field once (a body of invalid customers repeats its values)."""
    for keys, group in _by_keys(objects, problems).items():
        fields = _fields_of(keys)
        if fields is None:  # two spellings of one field: whether they agree is a question for each customer
            for obj in group:
                clean_customer(obj, problems)
            continue
        missing = len(FEATURES) - sum(feature is not None for _, feature in fields)
        problems.errors += missing * len(group)
        every_one = bool(missing)  # whether every customer of the group is known to be invalid
        invalid = None  # else, per customer, whether it is
        for key, feature in fields:
            bad = _invalid_values(feature, list(map(itemgetter(key), group)))
            if bad.__class__ is bool:  # the same verdict for all
                problems.errors += bad * len(group)
                every_one |= bad
            else:
                problems.errors += sum(bad)
                if not every_one:
                    invalid = bad if invalid is None else list(map(operator.or_, invalid, bad))
        problems.customers += len(group) if every_one else sum(invalid or ())


def _by_keys(objects: list, problems: Problems) -> dict[tuple, list]:
    """The customer objects grouped by their keys, in order; what is no object, or one of too many fields, counted as
    the error it is. Most bodies have one group, found without a loop in Python."""
    keys = list(map(tuple, objects)) if set(map(type, objects)) == {dict} else None
    if keys is not None and max(map(len, keys)) <= MAX_FIELDS and keys.count(keys[0]) == len(keys):
        return {keys[0]: objects}
    groups = defaultdict(list)
    for obj in objects:
        if obj.__class__ is dict and len(obj) <= MAX_FIELDS:
            groups[tuple(obj)].append(obj)
        else:
            problems.errors += 1
            problems.customers += 1
    return groups


@lru_cache(maxsize=256)
def _fields_of(keys: tuple) -> tuple | None:
    """The fields among keys, as (key, feature, or None for the id); None when two keys name one field."""
    fields, names = [], set()
    for key in keys:
        feature = feature_for(key)
        if feature is None and clean_text(key) != ID_NAME:
            continue
        name = feature.name if feature else ID_COLUMN
        if name in names:
            return None
        names.add(name)
        fields.append((key, feature))
    return tuple(fields)


# A whole-number id is echoed as JSON writes it in 64 bits (orjson's range, and what clients read back exactly).
ID_MIN, ID_MAX = -(2**63), 2**64 - 1
ID_PROBLEM = f"The customer's id should be a string or a whole number from {ID_MIN} to {ID_MAX}"


def _check_id(value) -> tuple[Any, str | None]:
    if value.__class__ is float and value.is_integer():  # 449.0 is a JSON Schema integer
        value = int(value)
    if value.__class__ is str or (value.__class__ is int and ID_MIN <= value <= ID_MAX):
        return value, None
    return None, ID_PROBLEM


CONTAINERS = {list, dict}  # what JSON arrays and objects are read as
SAME_WHEN_EQUAL = (str, type(None))


def _invalid_values(feature: Feature | None, column: list) -> list[bool] | bool:
    """Whether each value is refused, or whether all are (one value everywhere); each distinct value checked once."""
    check = feature.check if feature else _check_id
    first = column[0]
    # One value everywhere (a flood of blanks or of one unknown category): one check. Equality is the value's own
    # only for text and null (1 == 1.0 == True, which the schema tells apart).
    if first.__class__ in SAME_WHEN_EQUAL and column.count(first) == len(column):
        return check(first)[1] is not None
    kinds = set(map(type, column))
    if kinds & CONTAINERS:  # arrays and objects: refused as values everywhere, and unhashable
        if kinds <= CONTAINERS:
            return True
        return [value.__class__ in CONTAINERS or check(value)[1] is not None for value in column]
    typed = list(zip(map(type, column), column, strict=True))
    verdicts = {key: check(key[1])[1] is not None for key in set(typed)}
    return list(map(verdicts.__getitem__, typed))


def conflict(first: str, second: str) -> str:
    """The error of two spellings of one field that give the model different values."""
    return f"{first!r} and {second!r} are the same field with different values"


# ---- The fast acceptors: one for the model's spelling and one for the dataset's, each taking that spelling exactly,
# JSON numbers (and TotalCharges as the dataset's text), nothing else. A single alias per field keeps pydantic's key
# look-ups cheap; extra="forbid" leaves other keys, and so a second spelling of a field, to clean_customer.


def _exact_field(feature: Feature, name: str):
    described = Field(validation_alias=name, description=feature.description)
    if feature.categorical:
        return Annotated[Literal[feature.accepted_values], described]
    bounds = Field(ge=feature.minimum, le=feature.maximum, strict=True)
    if feature.integer:  # 12.0 is an integer to JSON Schema (and json.dumps writes a float column so)
        return Annotated[int, described, bounds, BeforeValidator(_whole_number)]
    if feature.blank_is_zero:
        as_text = BeforeValidator(_text_as_number(feature))
        return Annotated[float, described, bounds, Field(allow_inf_nan=False), as_text]
    return Annotated[float, described, bounds, Field(allow_inf_nan=False)]


def _whole_number(value):
    return int(value) if value.__class__ is float and value.is_integer() else value


def _text_as_number(feature: Feature):
    @lru_cache(maxsize=1 << 16)  # a column's texts repeat; an unseen one costs one Feature.clean
    def read_text(text: str):
        try:
            return feature.clean(text)
        except InvalidValue:
            return text  # refused by the strict float, and worded by clean_customer

    return lambda value: read_text(value) if value.__class__ is str else value


def _exact_customer(spelling: str) -> type:
    names = {f.name: (f.column if spelling == "dataset" else f.name) for f in FEATURES}
    # Not required: a missing field is a KeyError where the customer is scored, and clean_customer words it.
    fields = {f.name: NotRequired[_exact_field(f, names[f.name])] for f in FEATURES}
    whole = Annotated[int, Field(strict=True, ge=ID_MIN, le=ID_MAX)]
    fields[ID_COLUMN] = NotRequired[Annotated[str, Field(strict=True)] | whole]
    fields["Churn"] = NotRequired[Annotated[Any, Field(validation_alias="Churn" if spelling == "dataset" else "churn")]]
    customer = TypedDict(f"{spelling.title()}SpelledCustomer", fields)
    customer.__pydantic_config__ = ConfigDict(extra="forbid")
    return customer


EXACT_CUSTOMERS = {spelling: _exact_customer(spelling) for spelling in ("model", "dataset")}
DATASET_MARK = f'"{FEATURES_BY_NAME["seniorcitizen"].column}"'.encode()  # a name only the dataset's spelling has


def exact_spelling(body: bytes) -> str:
    """The spelling a JSON body seems to use, from its first customer: which fast acceptor to try."""
    return "dataset" if DATASET_MARK in body[:4096] else "model"


def exact_acceptors(max_customers: int) -> dict[tuple[str, bool], TypeAdapter]:
    """(spelling, many) -> the fast acceptor of one customer, or of a batch of them."""
    # fail_fast: the first customer it cannot take ends the fast attempt; clean_customer words every error.
    batch = Field(min_length=1, max_length=max_customers, fail_fast=True)
    acceptors = {}
    for spelling, customer in EXACT_CUSTOMERS.items():
        acceptors[spelling, False] = TypeAdapter(customer)
        acceptors[spelling, True] = TypeAdapter(Annotated[list[customer], batch])
    return acceptors


class Prediction(TypedDict):
    customerID: NotRequired[Annotated[str | int, Field(description="The customer's id, when it was sent")]]
    churn_probability: Annotated[float, Field(ge=0, le=1, description="Probability that the customer churns")]
    churn: Annotated[bool, Field(description="churn_probability >= the service's threshold")]
