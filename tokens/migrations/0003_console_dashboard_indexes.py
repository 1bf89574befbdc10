# Indexes for the console's dashboard (issue 12): fetch-log time ranges read the
# outcome from the index (created_at, outcome), which replaces created_at's own
# index (added first, so prune never runs without one); stored tokens by expiry.

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tokens", "0002_storedtoken"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="fetchlog",
            index=models.Index(fields=["created_at", "outcome"], name="fetchlog_time_outcome"),
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
