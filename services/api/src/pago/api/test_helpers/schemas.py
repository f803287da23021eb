"""Bodies of the test-helper endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from pago.api.validation import SafeStr
from pago.common.enums import TransferStage


class SimulateTransferRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": "10.5", "stage": "confirmed"}]},
    )

    amount: Annotated[
        SafeStr,
        Field(
            min_length=1,
            max_length=48,
            description="Token amount as a decimal string (at most the token's decimals).",
            examples=["10.5"],
        ),
    ]
    from_address: Annotated[SafeStr, Field(max_length=128)] | None = Field(
        default=None,
        description="The sender; a random valid address of the session's chain when omitted.",
    )
    stage: TransferStage = Field(
        default=TransferStage.CONFIRMED,
        description="`detected` (near the head), `confirmed` (credits) or `reverted`.",
    )
