"""The one backbone registry: everything needed to build, feed and name a frozen ImageNet CNN.

Plain data, no TensorFlow import, so `cxr backbones` and `cxr --help` stay instant. Adding a
backbone is one entry. Every entry is built with ``include_top=False, pooling="avg"`` so the
embedding is a fixed-size vector, and fed through its own ``keras.applications`` preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr.errors import CxrError

KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
# How an image meets the square input: ``squash`` stretches it (the paper), ``pad`` keeps the
# aspect ratio and pads with black. Part of a store's identity.
RESIZE_POLICIES = ("squash", "pad")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    module: str  # keras.applications.<module>: holds the constructor and preprocess_input
    constructor: str
    input_size: int  # native square input, pixels
    dim: int  # length of the pooled embedding
    weights_url: str  # Keras' own ImageNet no-top file; its basename is the standard file name
    kwargs: dict = field(default_factory=dict)

    @property
    def weights_file(self) -> str:
        return self.weights_url.rsplit("/", 1)[-1]

    @property
    def preprocessing(self) -> str:
        return f"keras.applications.{self.module}.preprocess_input"

    @property
    def constructor_label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.constructor}({args})"


_SPECS = [
    # The paper's five.
    BackboneSpec(
        "vgg19",
        "vgg19",
        "VGG19",
        224,
        512,
        KERAS_URL + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    BackboneSpec(
        "mobilenet_v2",
        "mobilenet_v2",
        "MobileNetV2",
        224,
        1280,
        KERAS_URL
        + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        {"alpha": 1.0},
    ),
    BackboneSpec(
        "inception_v3",
        "inception_v3",
        "InceptionV3",
        299,
        2048,
        KERAS_URL + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    BackboneSpec(
        "xception",
        "xception",
        "Xception",
        299,
        2048,
        KERAS_URL + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    BackboneSpec(
        "inception_resnet_v2",
        "inception_resnet_v2",
        "InceptionResNetV2",
        299,
        1536,
        KERAS_URL
        + "inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    # Small backbones with real weights on air-gapped machines: fast real checks.
    BackboneSpec(
        "mobilenet_v2_035",
        "mobilenet_v2",
        "MobileNetV2",
        224,
        1280,
        KERAS_URL
        + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
        {"alpha": 0.35},
    ),
    BackboneSpec(
        "mobilenet_025",
        "mobilenet",
        "MobileNet",
        224,
        256,
        KERAS_URL + "mobilenet/mobilenet_2_5_224_tf_no_top.h5",
        {"alpha": 0.25},
    ),
    # What a user would try next.
    BackboneSpec(
        "densenet121",
        "densenet",
        "DenseNet121",
        224,
        1024,
        KERAS_URL + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    BackboneSpec(
        "resnet50",
        "resnet50",
        "ResNet50",
        224,
        2048,
        KERAS_URL + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    BackboneSpec(
        "efficientnet_b0",
        "efficientnet",
        "EfficientNetB0",
        224,
        1280,
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5",
    ),
]

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}
PAPER_BACKBONES = ("vgg19", "mobilenet_v2", "inception_v3", "xception", "inception_resnet_v2")


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise CxrError(f"unknown backbone {name!r}; choose from: {', '.join(REGISTRY)}") from None
