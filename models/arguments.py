"""Argument types whose range is known, for the models', networks' and datamodules' signatures.

LightningCLI (jsonargparse) checks a value against its type when it parses the command line and the config files,
before anything is built, so that a bad value is one line that names the key, the value and what is allowed
(`train.py` prints it; see `train.short_error`). The types are `typing.Annotated` constraints (checked by
pydantic, which jsonargparse uses for them), so the values reach the classes as plain ints, floats and strings.
Calls from Python do not go through the parser: the classes keep their own checks for those.

A module that uses these types in a signature must not use `from __future__ import annotations`: with string
annotations jsonargparse drops the constraints.
"""

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Lt

PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
OpenUnitInterval = Annotated[float, Gt(0), Lt(1)]  # e.g. a discriminator accuracy threshold

# the names the losses accept (models.losses.GAN_LOSSES; a test checks the two agree)
GANLossName = Literal["nonsaturating", "minimax", "wasserstein", "hinge", "least_squares"]
AggregationName = Literal["mean", "max", "softmax"]  # models.losses.AGGREGATIONS
