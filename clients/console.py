"""
The operator console's admin site: Django's, with a sign-in limited like
staff HTTP Basic and the credentials exchange (clients.failures). Installed
as the default site by clients.apps.ConsoleAdminConfig, so `admin.site` is
this one everywhere.
"""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from clients.failures import SignInLocked, staff_sign_in
from clients.sso import sso_sign_out


class ConsoleLoginForm(AdminAuthenticationForm):
    """Django's admin sign-in through staff_sign_in: failures counted, lockouts refused."""

    #: Set when the sign-in was refused without trying the password.
    lockout = None

    def clean(self):
        # AuthenticationForm.clean, with staff_sign_in in place of authenticate().
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = staff_sign_in(self.request, username, password)
            except SignInLocked as locked:
                self.lockout = locked.lockout
                raise ValidationError(locked.lockout.message(), code="locked") from None
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class ConsoleSite(admin.AdminSite):
    site_header = "tokenserver console"
    site_title = "tokenserver"
    index_title = "Providers, credentials and tokens"
    login_form = ConsoleLoginForm
    # "View site": the landing page (links to the console, the API docs and the probes).
    site_url = "/"

    def login(self, request, extra_context=None):
        """Django's login page; a sign-in refused by a lockout answers 429 with Retry-After."""
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        lockout = getattr(form, "lockout", None)
        if lockout is not None:
            response.status_code = 429
            response["Retry-After"] = str(lockout.retry_after)
        return response

    def logout(self, request, extra_context=None):
        """Django's sign-out; with SSO on, the user service's cookies go too (clients.sso)."""
        return sso_sign_out(request, super().logout(request, extra_context))
