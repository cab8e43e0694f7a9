/* newsletter: the signup and "change my subscription" forms, sent with fetch and answered in
   place. Without this script (or without JavaScript) the forms post as plain forms and the
   visitor sees our own thank-you page, or the page the form names in return_url.
   Served from <base_url>/static/signup.js; no other requests than to <base_url>. */
(function () {
  'use strict';

  function setup(form) {
    var status = form.querySelector('[data-newsletter-status]');
    var button = form.querySelector('[type=submit]');
    form.noValidate = true; /* checked here, with the answer in the status line */

    function show(text, ok) {
      if (!status) return;
      status.textContent = text || '';
      status.setAttribute('data-ok', ok ? 'true' : 'false');
    }

    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var email = form.querySelector('input[type=email]');
      if (email && !email.checkValidity()) {
        show(email.validationMessage, false);
        email.focus();
        return;
      }
      var widget = form.querySelector('altcha-widget');
      var solving = widget && typeof widget.verify === 'function' && widget.getState() !== 'verified';
      if (button) button.disabled = true;
      show(form.getAttribute('data-wait-text'), true);
      Promise.resolve(solving ? widget.verify() : null)
        .then(function () {
          return fetch(form.action, {
            method: 'POST',
            body: new FormData(form),
            headers: { Accept: 'application/json' },
            credentials: 'same-origin'
          });
        })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          show(answer.message, answer.ok);
          if (answer.ok) form.reset();
          if (widget && typeof widget.reset === 'function') widget.reset();
        })
        .catch(function () { show(form.getAttribute('data-error-text'), false); })
        .then(function () { if (button) button.disabled = false; });
    });
  }

  function start() {
    var forms = document.querySelectorAll('form[data-newsletter]');
    for (var i = 0; i < forms.length; i++) setup(forms[i]);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
