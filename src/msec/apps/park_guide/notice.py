"""The Park Guide's informed-consent notice, in every language citizens are served in.

Published once to the consent store (``park_guide/v1/<lang>``) at first start; a published
notice never changes. To change the text, add version 2 here: citizens are then asked to
accept it again (``SqlConsent.needs_renewal``).
"""

# Japanese text uses full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

from typing import Final

NOTICE_PURPOSE: Final = "park_guide"
NOTICE_VERSION: Final = 1

NOTICES: Final[dict[str, dict[str, str]]] = {
    "en": {
        "controller": "Santander City Council (Ayuntamiento de Santander), Environment Service, "
        "Plaza del Ayuntamiento s/n, 39002 Santander, Spain",
        "purpose_text": "To run the Park Guide: your account, the points you earn for visiting "
        "stops and rating the quality of the park's environmental data, and a leaderboard "
        "that shows only your random nickname. Your ratings help the city find faulty sensors.",
        "legal_basis": "Your consent (GDPR Article 6(1)(a)). You can withdraw it at any time in "
        "your account; withdrawing does not affect what was done before.",
        "recipients": "The city's environment service. Your e-mail address is stored encrypted "
        "and is not shared. Ratings without your identity may be published as open data.",
        "rights": "Access, rectification, erasure (delete your account at any time), "
        "restriction, portability (download your data) and objection; complaints to the "
        "Spanish Data Protection Agency (AEPD).",
        "text": "We keep your e-mail address (encrypted), a random nickname, your visits, "
        "points and ratings, until you delete your account.",
    },
    "es": {
        "controller": "Ayuntamiento de Santander, Servicio de Medio Ambiente, "
        "Plaza del Ayuntamiento s/n, 39002 Santander",
        "purpose_text": "Gestionar la Guía del Parque: su cuenta, los puntos que gana al visitar "
        "paradas y valorar la calidad de los datos ambientales del parque, y una "
        "clasificación que solo muestra su apodo aleatorio. Sus valoraciones ayudan a la "
        "ciudad a detectar sensores averiados.",
        "legal_basis": "Su consentimiento (artículo 6.1.a del RGPD). Puede retirarlo en "
        "cualquier momento desde su cuenta, sin que afecte a lo realizado antes.",
        "recipients": "El servicio de medio ambiente del Ayuntamiento. Su correo se guarda "
        "cifrado y no se comparte. Las valoraciones sin su identidad pueden publicarse como "
        "datos abiertos.",
        "rights": "Acceso, rectificación, supresión (puede borrar su cuenta cuando quiera), "
        "limitación, portabilidad (descargar sus datos) y oposición; reclamaciones ante la "
        "Agencia Española de Protección de Datos (AEPD).",
        "text": "Guardamos su correo electrónico (cifrado), un apodo aleatorio, sus visitas, "
        "puntos y valoraciones, hasta que borre su cuenta.",
    },
    "ja": {
        "controller": "サンタンデール市役所 環境局（スペイン、39002 サンタンデール、"
        "Plaza del Ayuntamiento s/n）",
        "purpose_text": "パークガイドの運営のため：あなたのアカウント、スポットを訪れたり公園の"
        "環境データの品質を評価したりして得るポイント、そしてランダムなニックネームだけを表示する"
        "ランキング。あなたの評価は、市が故障したセンサーを見つける助けになります。",
        "legal_basis": "あなたの同意（GDPR 第6条1項(a)）。同意はアカウントからいつでも撤回でき、"
        "撤回前の処理には影響しません。",
        "recipients": "市の環境局。メールアドレスは暗号化して保存し、共有しません。"
        "あなたを特定できない評価はオープンデータとして公開されることがあります。",
        "rights": "アクセス、訂正、消去（いつでもアカウントを削除できます）、処理の制限、"
        "データポータビリティ（データのダウンロード）、異議申し立ての権利。"
        "苦情はスペインデータ保護庁（AEPD）へ。",
        "text": "アカウントを削除するまで、メールアドレス（暗号化）、ランダムなニックネーム、"
        "訪問、ポイント、評価を保存します。",
    },
}
