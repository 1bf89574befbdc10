"""
The realm's console page (issue 12): help where an operator needs it, errors on the field
at fault.
"""

import pytest

from realms.models import Realm
from realms.tests.test_url_checks import _realm_form
from tests.factories import ArgumentFactory, RealmFactory

pytestmark = pytest.mark.django_db


def test_the_argument_inline_explains_place_and_templates(console):
    realm = RealmFactory(id="wx")
    ArgumentFactory(realm=realm, name="appid", value="$key_1")

    page = console.get("/admin/realms/realm/wx/change/").content.decode()

    assert "basic: HTTP Basic credentials" in page
    assert "${key_1} inside text (Bearer ${key_1})" in page


def test_a_computing_token_path_is_refused_on_its_field(console):
    form = _realm_form(url="https://8.8.8.8/token", token_path="$.access_token * 400000")

    page = console.post("/admin/realms/realm/add/", form)

    assert page.status_code == 200  # the form again
    html = page.content.decode()
    # The error sits in the token_path row, not only at the top of the form.
    row = html[html.index("field-token_path") : html.index("field-expires_in_path")]
    assert "computes a value (arithmetic)" in row
    assert not Realm.objects.filter(pk="wx").exists()
