"""Signed commands to devices: the format, the store, and the sender.

The platform signs each command with its own Ed25519 command key; the device SDK
(:class:`msec.sdk.command.CommandReceiver`) verifies it and refuses replays and stale ones.
See README.md for what is guaranteed.
"""

from msec.actuate.actuator import (
    COMMAND_TOPIC_SUFFIX,
    Actuator,
    CommandInfo,
    CommandNotSent,
    MqttCommandPublisher,
    Publish,
    command_topic,
)
from msec.actuate.command import (
    Command,
    CommandRejected,
    CommandSigner,
    RejectedBecause,
    check_args,
    key_id,
    open_command,
)
from msec.actuate.memory import MemoryPublisher
from msec.actuate.sql import CommandRecord, SqlCommands

__all__ = [
    "COMMAND_TOPIC_SUFFIX",
    "Actuator",
    "Command",
    "CommandInfo",
    "CommandNotSent",
    "CommandRecord",
    "CommandRejected",
    "CommandSigner",
    "MemoryPublisher",
    "MqttCommandPublisher",
    "Publish",
    "RejectedBecause",
    "SqlCommands",
    "check_args",
    "command_topic",
    "key_id",
    "open_command",
]
