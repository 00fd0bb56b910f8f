"""Pilot 2, Connected Care: home monitoring for elderly people living alone.

:mod:`~msec.apps.care.model` names the homes, devices and alarm kinds;
:mod:`~msec.apps.care.engine` raises alarms from sensor events; :mod:`~msec.apps.care.alarms`
keeps their lifecycle; :mod:`~msec.apps.care.notify` tells operators and caregivers;
:mod:`~msec.apps.care.service` runs the engine on a platform's log.
"""
