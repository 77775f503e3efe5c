"""The customer contract, defined once: it drives request validation, the OpenAPI document and the web form.

Each feature is named as the dataset spells it; the model's spelling is derived with the training cleaning
(data.clean_text), and a client may send either spelling of a name or of a category.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from churn.data import clean_text

YES_NO = ("Yes", "No")
INTERNET_ADDON = ("Yes", "No", "No internet service")


@dataclass(frozen=True)
class Feature:
    column: str  # the dataset's own column name
    description: str
    values: tuple = ()  # the dataset's own category spellings; empty for a number
    minimum: float = 0
    maximum: float | None = None
    integer: bool = False

    @property
    def name(self) -> str:
        return clean_text(self.column)

    @property
    def categorical(self) -> bool:
        return bool(self.values)

    @property
    def clean_values(self) -> tuple:
        return tuple(clean_text(v) for v in self.values)

    def constraints(self) -> dict:
        """What a client may send for this feature, as the error details and the model card state it."""
        if self.categorical:
            return {"type": "string", "allowed": list(self.accepted_values)}
        return {"type": "integer" if self.integer else "number", "minimum": self.minimum, "maximum": self.maximum}

    @property
    def accepted_values(self) -> tuple:
        """Every spelling a client may send: the model's first, then the dataset's where it differs."""
        return tuple(dict.fromkeys(self.clean_values + self.values))


FEATURES = (
    Feature("gender", "Customer's gender", ("Female", "Male")),
    Feature("SeniorCitizen", "1 if the customer is 65 or older, else 0", maximum=1, integer=True),
    Feature("Partner", "Has a partner", YES_NO),
    Feature("Dependents", "Has dependents", YES_NO),
    Feature("tenure", "Months with the company", maximum=1200, integer=True),
    Feature("PhoneService", "Has phone service", YES_NO),
    Feature("MultipleLines", "Has multiple phone lines", ("No phone service", "No", "Yes")),
    Feature("InternetService", "Internet service provider", ("DSL", "Fiber optic", "No")),
    Feature("OnlineSecurity", "Has online security", INTERNET_ADDON),
    Feature("OnlineBackup", "Has online backup", INTERNET_ADDON),
    Feature("DeviceProtection", "Has device protection", INTERNET_ADDON),
    Feature("TechSupport", "Has tech support", INTERNET_ADDON),
    Feature("StreamingTV", "Streams TV", INTERNET_ADDON),
    Feature("StreamingMovies", "Streams movies", INTERNET_ADDON),
    Feature("Contract", "Contract term", ("Month-to-month", "One year", "Two year")),
    Feature("PaperlessBilling", "Paperless billing", YES_NO),
    Feature(
        "PaymentMethod",
        "Payment method",
        ("Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"),
    ),
    Feature("MonthlyCharges", "Monthly charges in dollars", maximum=100_000),
    Feature("TotalCharges", "Total charges in dollars; blank (a new customer) counts as 0", maximum=100_000_000),
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


# The dataset keeps TotalCharges as text, blank for a customer in their first month, which training reads as 0.
NUMBER_TEXT = r"^ *([0-9]{1,8}(\.[0-9]+)?)? *$"


def number_from_text(value):
    """TotalCharges as the dataset writes it ("29.85", " ") -> the number training reads; anything else unchanged."""
    if isinstance(value, str) and re.fullmatch(NUMBER_TEXT, value):
        return float(value) if value.strip() else 0.0
    return value


def whole_number(value):
    """12.0 is an integer to JSON Schema (and json.dumps writes a float column so); strict int refuses it."""
    return int(value) if value.__class__ is float and value.is_integer() else value


def _field_type(feature: Feature):
    field = Field(
        validation_alias=AliasChoices(feature.name, feature.column),
        description=feature.description,
    )
    if feature.categorical:
        return Annotated[Literal[feature.accepted_values], field]
    # Strict: a number must be a JSON number (no "12", no true), as the OpenAPI document says.
    if feature.integer:  # int validation refuses NaN and infinities itself
        integer_bounds = Field(ge=feature.minimum, le=feature.maximum, strict=True)
        return Annotated[int, field, integer_bounds, BeforeValidator(whole_number)]
    bounds = Field(ge=feature.minimum, le=feature.maximum, strict=True, allow_inf_nan=False)
    if feature.name == "totalcharges":
        as_text = Annotated[str, Field(pattern=NUMBER_TEXT)]
        number = Annotated[float, Field(ge=feature.minimum, le=feature.maximum)]
        return Annotated[
            float, field, bounds, BeforeValidator(number_from_text, json_schema_input_type=number | as_text)
        ]
    return Annotated[float, field, bounds]


# Extra keys (customerID, Churn, ...) are ignored so that a whole dataset row can be sent as it is.
Customer = TypedDict("Customer", {f.name: _field_type(f) for f in FEATURES})
Customer.__pydantic_config__ = ConfigDict(extra="ignore", title="Customer")


class Prediction(TypedDict):
    churn_probability: Annotated[float, Field(ge=0, le=1, description="Probability that the customer churns")]
    churn: Annotated[bool, Field(description="churn_probability >= the service's threshold")]


def batch_adapter(max_customers: int) -> TypeAdapter:
    return TypeAdapter(Annotated[list[Customer], Field(min_length=1, max_length=max_customers)])


CUSTOMER = TypeAdapter(Customer)
