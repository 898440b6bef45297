"""``python -m tests.apps.djsite.prepare DIR``: migrate the sqlite DB in DIR, add the
superuser ``admin``/``compat-pass`` and the file ``FileResponse`` serves."""

import os
import sys


def main(directory: str) -> None:
    os.environ["COMPAT_DJANGO_DIR"] = directory
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.apps.djsite.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User

    User.objects.create_superuser("admin", "admin@example.com", "compat-pass")
    from .views import FILE_NAME

    with open(os.path.join(directory, FILE_NAME), "wb") as f:
        f.write(bytes(range(256)) * 1024)  # 256 KiB


if __name__ == "__main__":
    main(sys.argv[1])
