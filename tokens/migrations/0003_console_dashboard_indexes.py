# Indexes for the console's dashboard (issue 12), read from the index alone:
# a secret's attempts newest first with their outcome (replaces fetchlog_secret
# and realm's own index, its prefix), and time ranges with the outcome
# (replaces created_at's own index); stored tokens by expiry. The new ones are
# added before the old ones go, so no query runs without one.

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0002_storedtoken"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="fetchlog",
            index=models.Index(
                fields=["realm", "key", "-created_at", "outcome"], name="fetchlog_secret_last"
            ),
        ),
        migrations.AddIndex(
            model_name="fetchlog",
            index=models.Index(fields=["created_at", "outcome"], name="fetchlog_time_outcome"),
        ),
        migrations.RemoveIndex(model_name="fetchlog", name="fetchlog_secret"),
        migrations.AlterField(
            model_name="fetchlog",
            name="realm",
            field=models.CharField(max_length=50),
        ),
        migrations.AlterField(
            model_name="fetchlog",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddIndex(
            model_name="storedtoken",
            index=models.Index(fields=["expires_at"], name="storedtoken_expires"),
        ),
    ]
