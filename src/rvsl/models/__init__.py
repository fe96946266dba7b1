"""The RVSL network and its parts, pretrained-weight loading and checkpoint conversion."""

from rvsl.models.backbone import Encoder, EncoderOutput, ReIDTrunk
from rvsl.models.checkpoint import CheckpointError, load_net, save_net
from rvsl.models.convert import convert_official_checkpoint, load_official
from rvsl.models.discriminator import PatchDiscriminator
from rvsl.models.generator import Generator
from rvsl.models.pretrained import PretrainedWeightsError, load_pretrained_backbone
from rvsl.models.resnet_ibn import BACKBONES, backbone_spec
from rvsl.models.rvsl_net import RVSLNet

__all__ = [
    "BACKBONES",
    "CheckpointError",
    "Encoder",
    "EncoderOutput",
    "Generator",
    "PatchDiscriminator",
    "PretrainedWeightsError",
    "RVSLNet",
    "ReIDTrunk",
    "backbone_spec",
    "convert_official_checkpoint",
    "load_net",
    "load_official",
    "load_pretrained_backbone",
    "save_net",
]
