//! Every text the patient sees, in English and Spanish, in one table.
//!
//! The language comes from the browser (`navigator.language`) and can be switched on every
//! screen. Adding a language means adding a column to [`text`].

/// A language of the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Spanish.
    Es,
}

impl Lang {
    /// The language for a BCP 47 tag such as `es-MX` (English unless it is Spanish).
    pub fn from_tag(tag: &str) -> Self {
        if tag.to_ascii_lowercase().starts_with("es") {
            Self::Es
        } else {
            Self::En
        }
    }

    /// The tag for `<html lang>`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }

    /// The other language (the switch offers it, named in itself).
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Es,
            Self::Es => Self::En,
        }
    }
}

/// Every text of the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Product name in the header.
    AppName,
    /// The language switch, in the other language.
    SwitchLanguage,
    /// Opening a link.
    Opening,
    /// Heading for the first visit.
    WelcomeTitle,
    /// Explains what the password is for.
    WelcomeIntro,
    /// Each sender has a password of its own, and why.
    PasswordPerSender,
    /// The unrecoverable-password warning.
    ForgottenWarning,
    /// Password field label.
    NewPassword,
    /// Confirmation field label.
    ConfirmPassword,
    /// Strength meter: the estimate is on its way.
    StrengthChecking,
    /// Strength meter: too short.
    StrengthTooShort,
    /// Strength meter: weak.
    StrengthWeak,
    /// Strength meter: fair.
    StrengthFair,
    /// Strength meter: strong.
    StrengthStrong,
    /// Enrollment refused: the estimator calls the password weak.
    StrengthRefused,
    /// Enrollment refused: the estimator did not load.
    StrengthUnavailable,
    /// Passwords differ.
    PasswordsDiffer,
    /// Create button.
    CreatePassword,
    /// Progress: deriving the key from the password.
    StepDeriving,
    /// Progress: generating the key pair.
    StepGenerating,
    /// Progress: registering with the relay.
    StepEnrolling,
    /// Progress: unlocking.
    StepUnlocking,
    /// Progress: decrypting messages.
    StepDecrypting,
    /// Unlock heading.
    UnlockTitle,
    /// Unlock explanation.
    UnlockIntro,
    /// Password field label.
    Password,
    /// Unlock button.
    Unlock,
    /// Wrong password; attempts left follow.
    WrongPassword,
    /// Attempts-left suffix.
    AttemptsLeft,
    /// Locked out; minutes follow.
    LockedOut,
    /// Minutes unit.
    Minutes,
    /// First contact: waiting for the sender.
    PreparingTitle,
    /// First contact explanation.
    PreparingIntro,
    /// Label of the sender's name. The name is the relay's directory entry, not part of the
    /// authenticated header, so the label says whose claim it is.
    From,
    /// Sent label.
    Sent,
    /// Expires label.
    Expires,
    /// Other messages heading.
    OtherMessages,
    /// Being prepared marker in the list.
    BeingPrepared,
    /// A delivered message did not open safely: heading of the notice in its place.
    UnreadableTitle,
    /// Why it is not shown.
    UnreadableIntro,
    /// Whom to contact, and how.
    UnreadableContact,
    /// No message to show (all expired or withdrawn): heading.
    NoMessagesTitle,
    /// No message to show: text.
    NoMessagesIntro,
    /// Lock button.
    Lock,
    /// After locking.
    LockedTitle,
    /// After locking: how to come back.
    LockedIntro,
    /// Idle lock notice.
    IdleLocked,
    /// Remote wipe notice.
    SessionEnded,
    /// Revoked page heading.
    RevokedTitle,
    /// Revoked page text.
    RevokedIntro,
    /// Expired page heading.
    ExpiredTitle,
    /// Expired page text.
    ExpiredIntro,
    /// Unknown link heading.
    UnknownTitle,
    /// Unknown link text.
    UnknownIntro,
    /// Heading for a link sent before the patient's password was reset.
    SupersededTitle,
    /// Text for such a link: use the newest message's link.
    SupersededIntro,
    /// Network error heading.
    NetworkTitle,
    /// Network error text.
    NetworkIntro,
    /// Retry button.
    TryAgain,
    /// Unsupported browser heading.
    UnsupportedTitle,
    /// Unsupported browser text.
    UnsupportedIntro,
    /// Generic failure.
    SomethingWrong,
    /// The relay offered unsafe key-derivation inputs (the password was not used, or the key it
    /// returned does not match them).
    UnsafeService,
    /// Label of the patient's key fingerprint (to compare with the sender when asked).
    YourKey,
    /// Heading of the identity-check step of an enrollment.
    CheckTitle,
    /// Why the sender asks, and who sees the answer.
    CheckIntro,
    /// Date-of-birth field label.
    DateOfBirth,
    /// Enrollment-code field label.
    EnrollmentCode,
    /// Where the enrollment code comes from.
    EnrollmentCodeHint,
    /// The answer is not a date or a code of the right form.
    CheckMalformed,
    /// Suffix after the number of answers the link still accepts.
    CheckAttemptsLeft,
    /// The answer did not match; nothing was saved.
    CheckWrong,
    /// No answers left: heading.
    CheckExhaustedTitle,
    /// No answers left: what to do.
    CheckExhausted,
    /// Progress: waiting for the sender to confirm the answer.
    StepConfirming,
    /// Unlock screen: the patient never chose a password.
    NeverSetPassword,
    /// After telling the sender: heading.
    DisownedTitle,
    /// After telling the sender: what to do.
    DisownedIntro,
    /// Telling the sender failed: contact them directly.
    ContactSender,
}

/// The text for `key` in `lang`.
pub fn text(lang: Lang, key: Key) -> &'static str {
    use Key::*;
    let (en, es) = match key {
        AppName => ("Secure message", "Mensaje seguro"),
        SwitchLanguage => ("Español", "English"),
        Opening => (
            "Opening your secure message…",
            "Abriendo su mensaje seguro…",
        ),
        WelcomeTitle => ("Create your password", "Cree su contraseña"),
        WelcomeIntro => (
            "Your messages are locked with a password that only you know. Choose one you will remember.",
            "Sus mensajes se protegen con una contraseña que solo usted conoce. Elija una que pueda recordar.",
        ),
        PasswordPerSender => (
            "This password is only for messages from this sender. If another clinic or pharmacy also sends you secure messages, you create a separate password for them: that way no sender can find out who else sends you messages.",
            "Esta contraseña es solo para los mensajes de este remitente. Si otra clínica o farmacia también le envía mensajes seguros, usted crea una contraseña distinta para ella: así ningún remitente puede saber quién más le envía mensajes.",
        ),
        ForgottenWarning => (
            "Important: if you forget this password, nobody can recover it — not the clinic, not us. The sender can only reset your access, and you will choose a new one.",
            "Importante: si olvida esta contraseña, nadie puede recuperarla, ni la clínica ni nosotros. El remitente solo puede restablecer su acceso y usted elegirá una nueva.",
        ),
        NewPassword => (
            "New password (at least 10 characters)",
            "Contraseña nueva (mínimo 10 caracteres)",
        ),
        ConfirmPassword => ("Type the password again", "Escriba la contraseña otra vez"),
        StrengthChecking => ("Checking strength…", "Comprobando la seguridad…"),
        StrengthTooShort => ("Too short", "Demasiado corta"),
        StrengthWeak => (
            "Weak: add more words or characters",
            "Débil: agregue más palabras o caracteres",
        ),
        StrengthFair => ("Fair", "Aceptable"),
        StrengthStrong => ("Strong", "Fuerte"),
        StrengthRefused => (
            "This password is too easy to guess. Add more words, or use words that do not belong together.",
            "Esta contraseña es demasiado fácil de adivinar. Agregue más palabras, o use palabras que no tengan relación entre sí.",
        ),
        StrengthUnavailable => (
            "The password check could not load. Check your connection and try again.",
            "No se pudo cargar la comprobación de la contraseña. Revise su conexión e intente de nuevo.",
        ),
        PasswordsDiffer => (
            "The two passwords are not the same.",
            "Las dos contraseñas no son iguales.",
        ),
        CreatePassword => ("Create password and open", "Crear contraseña y abrir"),
        StepDeriving => (
            "Protecting your password… (step 1 of 3)",
            "Protegiendo su contraseña… (paso 1 de 3)",
        ),
        StepGenerating => (
            "Creating your private keys… (step 2 of 3)",
            "Creando sus claves privadas… (paso 2 de 3)",
        ),
        StepEnrolling => (
            "Saving your locked keys… (step 3 of 3)",
            "Guardando sus claves cifradas… (paso 3 de 3)",
        ),
        StepUnlocking => ("Checking your password…", "Comprobando su contraseña…"),
        StepDecrypting => (
            "Decrypting on this device…",
            "Descifrando en este dispositivo…",
        ),
        UnlockTitle => ("Enter your password", "Escriba su contraseña"),
        UnlockIntro => (
            "Enter the password you created for messages from this sender. Each sender has its own password.",
            "Escriba la contraseña que creó para los mensajes de este remitente. Cada remitente tiene su propia contraseña.",
        ),
        Password => ("Password", "Contraseña"),
        Unlock => ("Unlock", "Desbloquear"),
        WrongPassword => ("Wrong password.", "Contraseña incorrecta."),
        AttemptsLeft => (
            "attempts left before a pause",
            "intentos antes de una pausa",
        ),
        LockedOut => (
            "Too many attempts. Try again in",
            "Demasiados intentos. Intente de nuevo en",
        ),
        Minutes => ("minute(s)", "minuto(s)"),
        PreparingTitle => (
            "Your message is being prepared",
            "Su mensaje se está preparando",
        ),
        PreparingIntro => (
            "The sender's system is locking this message to your new key. This usually takes a few seconds; this page will show it as soon as it is ready.",
            "El sistema del remitente está cifrando este mensaje con su nueva clave. Suele tardar unos segundos; esta página lo mostrará en cuanto esté listo.",
        ),
        From => (
            "From (name registered with this service)",
            "De (nombre registrado en este servicio)",
        ),
        Sent => ("Sent", "Enviado"),
        Expires => ("Available until", "Disponible hasta"),
        OtherMessages => ("Your other messages", "Sus otros mensajes"),
        BeingPrepared => ("being prepared", "en preparación"),
        UnreadableTitle => (
            "This message could not be opened safely",
            "Este mensaje no se pudo abrir de forma segura",
        ),
        UnreadableIntro => (
            "It may have been changed after it was sent, so it is not shown. Your other messages are not affected.",
            "Es posible que se haya modificado después de enviarse, por eso no se muestra. Sus otros mensajes no se ven afectados.",
        ),
        UnreadableContact => (
            "Please contact the sender using contact details you already know (not a number from a text message) and ask them to send it again.",
            "Comuníquese con el remitente usando datos de contacto que ya conozca (no un número de un mensaje de texto) y pídale que se lo envíe de nuevo.",
        ),
        NoMessagesTitle => ("No messages to show", "No hay mensajes para mostrar"),
        NoMessagesIntro => (
            "Your messages have expired or were withdrawn. Contact the sender if you still need them.",
            "Sus mensajes vencieron o fueron retirados. Comuníquese con el remitente si aún los necesita.",
        ),
        Lock => ("Lock", "Bloquear"),
        LockedTitle => ("Messages locked", "Mensajes bloqueados"),
        LockedIntro => (
            "Nothing readable is left on this device. To read again, open the link from your text message.",
            "No queda nada legible en este dispositivo. Para leer de nuevo, abra el enlace de su mensaje de texto.",
        ),
        IdleLocked => (
            "Locked because the page was idle.",
            "Bloqueado por inactividad.",
        ),
        SessionEnded => ("Your session was ended.", "Su sesión fue cerrada."),
        RevokedTitle => ("Message withdrawn", "Mensaje retirado"),
        RevokedIntro => (
            "The sender withdrew this message. Contact them if you have questions.",
            "El remitente retiró este mensaje. Comuníquese con ellos si tiene preguntas.",
        ),
        ExpiredTitle => ("Message expired", "Mensaje vencido"),
        ExpiredIntro => (
            "This message is no longer available. Contact the sender if you still need it.",
            "Este mensaje ya no está disponible. Comuníquese con el remitente si aún lo necesita.",
        ),
        UnknownTitle => ("Link not recognised", "Enlace no reconocido"),
        UnknownIntro => (
            "This link is not valid. Check that you opened the whole link from your text message.",
            "Este enlace no es válido. Verifique que abrió el enlace completo de su mensaje de texto.",
        ),
        SupersededTitle => ("Use your newest link", "Use su enlace más reciente"),
        SupersededIntro => (
            "Your password was reset after this link was sent, so this link cannot set a new one. Open the link in the newest text message from the sender. If you did not ask for a reset, contact the sender.",
            "Su contraseña se restableció después de que se envió este enlace, así que este enlace no puede crear una nueva. Abra el enlace del mensaje de texto más reciente del remitente. Si usted no pidió restablecerla, comuníquese con el remitente.",
        ),
        NetworkTitle => ("No connection", "Sin conexión"),
        NetworkIntro => (
            "We could not reach the secure message service. Check your connection and try again.",
            "No pudimos conectar con el servicio de mensajes seguros. Revise su conexión e intente de nuevo.",
        ),
        TryAgain => ("Try again", "Intentar de nuevo"),
        UnsupportedTitle => ("Browser not supported", "Navegador no compatible"),
        UnsupportedIntro => (
            "This browser cannot decrypt messages safely. Please open the link in an up-to-date browser such as Chrome, Safari, Firefox or Edge.",
            "Este navegador no puede descifrar mensajes de forma segura. Abra el enlace en un navegador actualizado como Chrome, Safari, Firefox o Edge.",
        ),
        SomethingWrong => (
            "Something went wrong. Please try again.",
            "Algo salió mal. Intente de nuevo.",
        ),
        UnsafeService => (
            "This service answered with unsafe security settings, so your messages were not opened. Please do not try again; contact the sender of your message.",
            "Este servicio respondió con ajustes de seguridad inseguros, así que sus mensajes no se abrieron. No lo intente de nuevo; comuníquese con quien le envió el mensaje.",
        ),
        YourKey => ("Your key fingerprint", "Huella de su clave"),
        CheckTitle => ("Confirm it's you", "Confirme que es usted"),
        CheckIntro => (
            "The sender asks you to confirm who you are before you create your password, so that nobody else who gets this link can read your messages. Your answer is checked by the sender only; this service never sees it.",
            "El remitente le pide que confirme quién es antes de crear su contraseña, para que nadie más que reciba este enlace pueda leer sus mensajes. Solo el remitente comprueba su respuesta; este servicio nunca la ve.",
        ),
        DateOfBirth => ("Your date of birth", "Su fecha de nacimiento"),
        EnrollmentCode => ("Enrollment code", "Código de inscripción"),
        EnrollmentCodeHint => (
            "The code the sender gave you in person, on paper or by phone (10 letters and digits).",
            "El código que el remitente le dio en persona, en papel o por teléfono (10 letras y números).",
        ),
        CheckMalformed => (
            "Please enter your full date of birth and the code exactly as you were given it.",
            "Escriba su fecha de nacimiento completa y el código tal como se lo dieron.",
        ),
        CheckAttemptsLeft => (
            "answers left for this link",
            "respuestas restantes para este enlace",
        ),
        CheckWrong => (
            "That does not match what the sender has on file. Nothing was saved; check your answer and try again.",
            "Eso no coincide con lo que el remitente tiene registrado. No se guardó nada; revise su respuesta e intente de nuevo.",
        ),
        CheckExhaustedTitle => ("No attempts left", "No quedan intentos"),
        CheckExhausted => (
            "This link accepts no more answers. Please contact the sender and ask them to send you a new message; its link will let you try again.",
            "Este enlace ya no acepta respuestas. Comuníquese con el remitente y pídale que le envíe un mensaje nuevo; su enlace le permitirá intentarlo otra vez.",
        ),
        StepConfirming => (
            "Waiting for the sender to confirm it's you…",
            "Esperando a que el remitente confirme que es usted…",
        ),
        NeverSetPassword => ("I never set a password", "Nunca creé una contraseña"),
        DisownedTitle => ("Contact the sender", "Comuníquese con el remitente"),
        DisownedIntro => (
            "We told the sender that you never set a password. Someone else may have used your link. Do not enter any password here; call the sender (use a number you already know, not one from a message) so they can reset your access.",
            "Avisamos al remitente de que usted nunca creó una contraseña. Es posible que otra persona haya usado su enlace. No escriba ninguna contraseña aquí; llame al remitente (a un número que ya conozca, no a uno de un mensaje) para que restablezca su acceso.",
        ),
        ContactSender => (
            "Please call the sender (use a number you already know, not one from a message) and tell them you never set a password.",
            "Llame al remitente (a un número que ya conozca, no a uno de un mensaje) y dígale que nunca creó una contraseña.",
        ),
    };
    match lang {
        Lang::En => en,
        Lang::Es => es,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_browser_tag() {
        assert_eq!(Lang::from_tag("es-MX"), Lang::Es);
        assert_eq!(Lang::from_tag("ES"), Lang::Es);
        assert_eq!(Lang::from_tag("en-US"), Lang::En);
        assert_eq!(Lang::from_tag("fr"), Lang::En);
    }

    #[test]
    fn every_text_is_translated() {
        use Key::*;
        for key in [
            AppName,
            WelcomeTitle,
            PasswordPerSender,
            ForgottenWarning,
            UnlockTitle,
            PreparingIntro,
            UnreadableTitle,
            UnreadableIntro,
            UnreadableContact,
            NoMessagesIntro,
            LockedIntro,
            UnsupportedIntro,
            SupersededTitle,
            SupersededIntro,
            UnsafeService,
            StrengthRefused,
            StrengthUnavailable,
            CheckTitle,
            CheckIntro,
            DateOfBirth,
            EnrollmentCode,
            EnrollmentCodeHint,
            CheckMalformed,
            CheckAttemptsLeft,
            CheckWrong,
            CheckExhaustedTitle,
            CheckExhausted,
            StepConfirming,
            NeverSetPassword,
            DisownedTitle,
            DisownedIntro,
            ContactSender,
        ] {
            assert_ne!(text(Lang::En, key), text(Lang::Es, key), "{key:?}");
        }
    }
}
