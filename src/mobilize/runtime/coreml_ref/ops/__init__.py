"""MIL op implementations; importing this package registers all of them."""

from mobilize.runtime.coreml_ref.ops import (  # noqa: F401
    activation,
    classifier,
    constexpr,
    control_flow,
    elementwise,
    nn,
    recurrent,
    reduction,
    resize,
    tensor,
)
