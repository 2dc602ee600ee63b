"""MIL op implementations; importing this package registers all of them."""

from mobilize.runtime.coreml_ref.ops import (  # noqa: F401
    activation,
    constexpr,
    elementwise,
    nn,
    reduction,
    resize,
    tensor,
)
